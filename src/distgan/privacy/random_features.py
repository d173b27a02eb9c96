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

Several kernels in one release (DP-MERF's multi-bandwidth variant): the frequencies are split evenly
over S lengthscales and each scale's block is weighted by ``1 / sqrt(S)``, so ``phi`` approximates the
mean of the S Gaussian kernels and stays of norm exactly 1: the sensitivity, and so the noise, does
not change. A wide kernel alone is nearly linear on images (it mostly matches class means); narrower
ones add the local structure that makes G's samples vary.

Everything that shapes the features is public: the seed of W, the feature count and the lengthscales
``l``, which come from a fixed rule of the image size (:func:`public_lengthscale`), never from a
statistic of private data (a median distance would itself need privatizing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

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
    ``inputs``-dimensional vectors for a Gaussian kernel of lengthscale ``lengthscale``, or for the mean
    of the kernels of ``lengthscale`` and each of ``extra_lengthscales`` (the frequencies split evenly
    over them, in that order)."""

    seed: int
    features: int
    lengthscale: float
    inputs: int
    extra_lengthscales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.features < 2 or self.features % 2:
            raise ValueError(f"random features: count must be even and >= 2, got {self.features}")
        for lengthscale in self.lengthscales:
            if not (lengthscale > 0 and math.isfinite(lengthscale)):
                raise ValueError(f"random features: lengthscales must be positive, got {self.lengthscales}")
        if len(self.lengthscales) > self.features // 2:
            raise ValueError(f"random features: {len(self.lengthscales)} lengthscales need at least as many "
                             f"frequencies, got {self.features // 2}")
        if self.inputs <= 0:
            raise ValueError(f"random features: inputs must be positive, got {self.inputs}")

    @property
    def lengthscales(self) -> tuple[float, ...]:
        return (self.lengthscale, *self.extra_lengthscales)

    @cached_property  # fixed by the fields; __call__ runs on every G step of dp-merf
    def _per_frequency(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each frequency's lengthscale and the weight of its cos and sin, ``[features / 2]`` each: scale s
        owns an even share m_s of the frequencies, weighted ``a / sqrt(S m_s)`` so every row's norm is a."""
        frequencies, scales = self.features // 2, len(self.lengthscales)
        shares = [frequencies // scales + (1 if s < frequencies % scales else 0) for s in range(scales)]
        lengthscales = torch.cat([torch.full((m,), lengthscale) for m, lengthscale in zip(shares, self.lengthscales)])
        weights = torch.cat([torch.full((m,), FEATURE_WEIGHT / math.sqrt(scales * m)) for m in shares])
        return lengthscales, weights

    def frequencies(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """W ``[features / 2, inputs]``, drawn from the public seed (the same on every host); row j has
        the variance 1 / l_j^2 of the kernel it belongs to."""
        rng = torch.Generator().manual_seed(self.seed)
        lengthscales, _ = self._per_frequency
        return (torch.randn(self.features // 2, self.inputs, generator=rng) / lengthscales[:, None]).to(device)

    def __call__(self, x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
        """``[a * phi(x), b]`` per row of ``x`` (flattened): ``[N, features + 1]``, each row of norm 1."""
        projected = x.flatten(1) @ frequencies.T
        _, weights = self._per_frequency
        weights = weights.to(device=projected.device, dtype=projected.dtype)
        constant = torch.full((len(x), 1), COUNT_WEIGHT, dtype=projected.dtype, device=projected.device)
        return torch.cat([torch.cos(projected) * weights, torch.sin(projected) * weights, constant], dim=1)


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

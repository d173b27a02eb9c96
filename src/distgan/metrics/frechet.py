"""Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, FID).

``d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))``. The trace of the matrix square root
is computed as the sum of square roots of the eigenvalues of ``S_1^(1/2) S_2 S_1^(1/2)``, a
symmetric positive semi-definite matrix: exact, and stable even when few samples make the
covariances singular (no complex parts to discard, unlike a general ``sqrtm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set, and how many samples they came from."""

    mean: torch.Tensor
    """float64 [D]."""
    covariance: torch.Tensor
    """float64 [D, D]."""
    count: int

    @classmethod
    def of(cls, features: torch.Tensor) -> GaussianStats:
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors [N, D] for a covariance, got {tuple(features.shape)}")
        features = features.double()
        return cls(features.mean(0), torch.cov(features.T), int(features.shape[0]))


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mean.shape)} vs {tuple(b.mean.shape)}")
    root_a = _psd_sqrt(a.covariance)
    middle = root_a @ b.covariance @ root_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (a.mean - b.mean).square().sum() + a.covariance.trace() + b.covariance.trace() - 2 * trace_sqrt
    return max(0.0, float(distance))

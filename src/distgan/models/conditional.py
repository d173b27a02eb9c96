"""Label-conditional generators: any model family's G, fed ``[z, onehot(y)]``, whose label is part of z.

A conditional G is still a function of one latent vector ``z`` of ``latent_dim`` entries, so every part
of distgan that draws ``G(z)`` (sample grids, metrics, ``distgan sample``, the audit, checkpoints)
works unchanged: the first entry of z picks the label through the inverse CDF of the label weights
(``Phi(z_0)`` is uniform on [0, 1]), the other ``latent_dim - 1`` entries are the noise. The label
weights are a buffer of G, set by the strategy (dp-merf: from the noisy label counts of the release),
saved with G's weights. ``G.labels_of(z)`` gives the label of each sample; ``G(z, labels)`` asks for
given labels (training does, to draw every class in each batch).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from distgan.config import ModelConfig
from distgan.models import ImageShape, ModelFactory, build_models


class LabelConditionalGenerator(nn.Module):
    label_weights: torch.Tensor

    def __init__(self, base: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.base = base
        self.num_labels = num_labels
        self.register_buffer("label_weights", torch.full((num_labels,), 1.0 / num_labels))

    def set_label_weights(self, weights: torch.Tensor) -> None:
        """The label distribution of ``G(z)`` (normalised here; non-negative, not all zero)."""
        weights = weights.detach().double().clamp_min(0).to(self.label_weights.device)
        if weights.shape != self.label_weights.shape or not bool(weights.sum() > 0):
            raise ValueError(f"label weights {weights.tolist()} must be {self.num_labels} non-negative numbers, "
                             "not all zero")
        self.label_weights.copy_((weights / weights.sum()).to(self.label_weights))

    def labels_of(self, z: torch.Tensor) -> torch.Tensor:
        """The label ``G(z)`` is drawn for: the inverse CDF of the label weights at ``Phi(z_0)``."""
        uniform = 0.5 * (1.0 + torch.erf(z[:, 0].double() / 2 ** 0.5))
        cdf = self.label_weights.double().cumsum(0).to(z.device)
        return torch.searchsorted(cdf, uniform.contiguous(), right=True).clamp(max=self.num_labels - 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = self.labels_of(z) if labels is None else labels
        onehot = F.one_hot(labels.to(z.device), self.num_labels).to(z.dtype)
        return self.base(torch.cat([z[:, 1:], onehot], dim=1))


def label_conditional(config: ModelConfig, image_shape: ImageShape, num_labels: int) -> ModelFactory:
    """The family ``config.name``, its G made label-conditional on ``num_labels`` labels (D unchanged)."""
    if config.latent_dim < 2:
        raise ValueError(f"model.latent_dim={config.latent_dim}: a label-conditional G needs at least 2 "
                         "(one entry picks the label)")
    if num_labels < 1:
        raise ValueError(f"a label-conditional G needs labels, got {num_labels}")
    base = build_models(dataclasses.replace(config, latent_dim=config.latent_dim - 1 + num_labels), image_shape)

    def generator() -> nn.Module:
        return LabelConditionalGenerator(base.generator(), num_labels)

    return ModelFactory(generator, base.discriminator, config.latent_dim, image_shape)


def generated_labels(generator: nn.Module, latents: torch.Tensor) -> torch.Tensor | None:
    """The labels of ``generator(latents)`` when G is label-conditional, else None."""
    if isinstance(generator, LabelConditionalGenerator):
        return generator.labels_of(latents.to(generator.label_weights.device)).cpu()
    return None

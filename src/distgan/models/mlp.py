"""Fully connected GANs: the paper's MNIST models (Tables 1-2) and a tuned variant."""

from __future__ import annotations

import math

import torch
from torch import nn

from distgan.config import ModelConfig
from distgan.models import MODELS, ImageShape, ModelFactory


class MLPGenerator(nn.Module):
    def __init__(self, layers: nn.Sequential, image_shape: ImageShape) -> None:
        super().__init__()
        self.layers = layers
        self.image_shape = image_shape

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images.flatten(1)).squeeze(1)


@MODELS.register("paper-mlp", "the paper's MNIST MLP GAN, Tables 1-2 (latent 64, hidden 256)")
def paper_mlp(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    pixels = math.prod(image_shape)
    hidden, latent = config.hidden, config.latent_dim

    def generator() -> nn.Module:  # Table 2: Linear-ReLU-Linear-ReLU-Linear-Tanh
        return MLPGenerator(nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, pixels), nn.Tanh()), image_shape)

    def discriminator() -> nn.Module:  # Table 1: Linear-LeakyReLU-Linear-LeakyReLU-Linear(-Sigmoid)
        return MLPDiscriminator(nn.Sequential(
            nn.Linear(pixels, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1)))

    return ModelFactory(generator, discriminator, latent, image_shape)


@MODELS.register("mlp", "tuned MLP GAN for fast good digits on a CPU (the default; see docs/TUNING.md)")
def tuned_mlp(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    pixels = math.prod(image_shape)
    hidden, latent = config.hidden, config.latent_dim

    def generator() -> nn.Module:
        # Wider last hidden layer and batch norm keep the generator from collapsing early.
        return MLPGenerator(nn.Sequential(
            nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, pixels), nn.Tanh()), image_shape)

    def discriminator() -> nn.Module:
        # A bounded logit (and, optionally, dropout) keeps D from winning outright against a G that must
        # serve two parties' digits at once (docs/TUNING.md: cfid 100 -> 53 for round-robin on 0-4 | 5-9).
        width = config.d_hidden or hidden
        layers: list[nn.Module] = [nn.Linear(pixels, 2 * width), nn.LeakyReLU(0.2), nn.Dropout(config.d_dropout),
                                   nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Dropout(config.d_dropout),
                                   nn.Linear(width, 1)]
        if config.d_logit_bound is not None:
            layers.append(SoftBound(config.d_logit_bound))
        return MLPDiscriminator(nn.Sequential(*layers))

    return ModelFactory(generator, discriminator, latent, image_shape)


class SoftBound(nn.Module):
    """``bound * tanh(x / bound)``: the identity near 0, never beyond +-bound."""

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(x / self.bound)

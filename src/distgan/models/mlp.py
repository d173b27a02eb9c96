"""Fully connected GANs: the paper's MNIST models (Tables 1-2) and two tuned variants (``mlp``, ``mlp-up``)."""

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


def _tuned_body(latent: int, hidden: int, out_features: int) -> list[nn.Module]:
    # Wider last hidden layer and batch norm keep the generator from collapsing early.
    return [nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, out_features)]


def _tuned_discriminator(config: ModelConfig, pixels: int) -> nn.Module:
    # A bounded logit (and, optionally, dropout) keeps D from winning outright against a G that must
    # serve two parties' digits at once (docs/TUNING.md: cfid 100 -> 53 for round-robin on 0-4 | 5-9).
    width = config.d_hidden or config.hidden
    layers: list[nn.Module] = [nn.Linear(pixels, 2 * width), nn.LeakyReLU(0.2), nn.Dropout(config.d_dropout),
                               nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Dropout(config.d_dropout),
                               nn.Linear(width, 1)]
    if config.d_logit_bound is not None:
        layers.append(SoftBound(config.d_logit_bound))
    return MLPDiscriminator(nn.Sequential(*layers))


@MODELS.register("mlp", "tuned MLP GAN (docs/TUNING.md rounds 1-2; the default until round 3)")
def tuned_mlp(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    pixels = math.prod(image_shape)

    def generator() -> nn.Module:
        return MLPGenerator(nn.Sequential(*_tuned_body(config.latent_dim, config.hidden, pixels), nn.Tanh()),
                            image_shape)

    return ModelFactory(generator, lambda: _tuned_discriminator(config, pixels), config.latent_dim, image_shape)


LOGIT_BOUNDED_MODELS = ("mlp", "mlp-up")
"""The families whose D ends in :class:`SoftBound` when ``model.d_logit_bound`` is set (the collapse
detector reads the bound off the config for these)."""

UPSAMPLED_CHANNELS = 8
"""Feature maps at half resolution that mlp-up's last layer turns into the image (docs/TUNING.md round 3:
8 channels at 14x14 cost 1.4x a round of ``mlp`` and more than halve fd-sharp at equal rounds)."""


class UpsampledGenerator(nn.Module):
    """The tuned MLP body to ``UPSAMPLED_CHANNELS`` maps at half size, then one 4x4 stride-2 transposed
    convolution to the image. Each output pixel is a function of a 2x2 neighbourhood of shared maps, so
    neighbouring pixels are correlated by construction: the per-pixel speckle of an MLP's last linear
    layer (independent weights per pixel) is what this removes."""

    def __init__(self, latent: int, hidden: int, image_shape: ImageShape) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height % 2 or width % 2:
            raise ValueError(f"model mlp-up doubles a half-size map, so images need even sides; got "
                             f"{height}x{width} (use model.name=mlp)")
        self.half_shape = (UPSAMPLED_CHANNELS, height // 2, width // 2)
        maps = math.prod(self.half_shape)
        self.body = nn.Sequential(*_tuned_body(latent, hidden, maps), nn.BatchNorm1d(maps), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.ConvTranspose2d(UPSAMPLED_CHANNELS, channels, 4, stride=2, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z).view(z.shape[0], *self.half_shape))


@MODELS.register("mlp-up", "the default: tuned MLP GAN whose G ends in a 2x transposed convolution "
                 "(sharper samples on a CPU, docs/TUNING.md round 3)")
def tuned_mlp_upsampled(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    pixels = math.prod(image_shape)
    return ModelFactory(lambda: UpsampledGenerator(config.latent_dim, config.hidden, image_shape),
                        lambda: _tuned_discriminator(config, pixels), config.latent_dim, image_shape)


class SoftBound(nn.Module):
    """``bound * tanh(x / bound)``: the identity near 0, never beyond +-bound."""

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = bound

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(x / self.bound)

"""DCGAN (Radford et al.), the paper's CelebA/LSUN models (Tables 3-4), at 64, 32 or 28 pixels.

64 px follows Tables 3-4 exactly (five layers each side). The 32/28 px variants drop one stage so
MNIST-sized data trains in seconds per round on a CPU.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from distgan.config import ModelConfig
from distgan.models import MODELS, ImageShape, ModelFactory

# Per image side: the generator's first spatial size and the channel multipliers of each stage.
_LAYOUTS = {64: (4, [8, 4, 2, 1]), 32: (4, [4, 2, 1]), 28: (7, [2, 1])}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 2) or 1, channels)
    return nn.Identity()


def _init_weights(module: nn.Module) -> None:
    # DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) norm scales.
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANDiscriminator(nn.Module):
    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).flatten()


@MODELS.register("dcgan", "DCGAN of Tables 3-4 at 64 px (32/28 px variants for MNIST); model.channels sets width")
def dcgan(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    channels, height, width = image_shape
    if height != width or height not in _LAYOUTS:
        raise ValueError(f"model dcgan supports square images of {sorted(_LAYOUTS)} px, got {height}x{width}; "
                         "set data.image_size")
    start, multipliers = _LAYOUTS[height]
    base, latent = config.channels, config.latent_dim

    def generator() -> nn.Module:
        layers: list[nn.Module] = [nn.Unflatten(1, (latent, 1, 1)),
                                   nn.ConvTranspose2d(latent, base * multipliers[0], start, 1, 0, bias=False),
                                   nn.BatchNorm2d(base * multipliers[0]), nn.ReLU(True)]
        for before, after in pairwise(multipliers):
            layers += [nn.ConvTranspose2d(base * before, base * after, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(base * after), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(base * multipliers[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        model = nn.Sequential(*layers)
        model.apply(_init_weights)
        return model

    def discriminator() -> nn.Module:
        reversed_multipliers = list(reversed(multipliers))
        layers: list[nn.Module] = [nn.Conv2d(channels, base * reversed_multipliers[0], 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        for before, after in pairwise(reversed_multipliers):
            layers += [nn.Conv2d(base * before, base * after, 4, 2, 1, bias=False),
                       _norm(config.norm, base * after), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(base * reversed_multipliers[-1], 1, start, 1, 0, bias=False)]
        model = DCGANDiscriminator(nn.Sequential(*layers))
        model.apply(_init_weights)
        return model

    return ModelFactory(generator, discriminator, latent, image_shape)

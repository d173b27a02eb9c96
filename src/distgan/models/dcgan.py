"""DCGAN (Radford et al.), the paper's CelebA/LSUN models (Tables 3-4), at 64, 32 or 28 pixels.

64 px follows Tables 3-4 (five layers each side). Table 3 lists ``max_pool2d`` after the first two
LeakyReLUs of D; with DCGAN's strided convolutions that would shrink a 64 px image to nothing, so we read
it as: those two stages downsample by max-pooling instead of by stride (``model.d_pool=max``: a stride-1
3x3 convolution, LeakyReLU, 2x2 max-pool), the other stages unchanged. The default stays DCGAN's
strided D (``model.d_pool=stride``), which trains the same resolution at a quarter of the first two
stages' cost. The 32/28 px variants drop one stage so MNIST-sized data trains in seconds per round on a CPU.
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

    def halving_conv(stage: int, before: int, after: int) -> tuple[list[nn.Module], list[nn.Module]]:
        """(convolution, pooling after the activation) of a stage that halves the image side."""
        if config.d_pool == "max" and stage < 2:
            return [nn.Conv2d(before, after, 3, 1, 1, bias=False)], [nn.MaxPool2d(2)]
        return [nn.Conv2d(before, after, 4, 2, 1, bias=False)], []

    def discriminator() -> nn.Module:
        reversed_multipliers = list(reversed(multipliers))
        conv, pool = halving_conv(0, channels, base * reversed_multipliers[0])
        layers: list[nn.Module] = [*conv, nn.LeakyReLU(0.2, True), *pool]
        for stage, (before, after) in enumerate(pairwise(reversed_multipliers), start=1):
            conv, pool = halving_conv(stage, base * before, base * after)
            layers += [*conv, _norm(config.norm, base * after), nn.LeakyReLU(0.2, True), *pool]
        layers += [nn.Conv2d(base * reversed_multipliers[-1], 1, start, 1, 0, bias=False)]
        model = DCGANDiscriminator(nn.Sequential(*layers))
        model.apply(_init_weights)
        return model

    return ModelFactory(generator, discriminator, latent, image_shape)

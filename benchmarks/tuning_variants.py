"""Scratch model variants of docs/TUNING.md round 3b, for ``benchmarks/tuning_sweep.py --setup``.

Not part of the package: the trials' ``convout`` is the package's ``mlp-up`` (distgan/models/mlp.py); these
were tried (``x-convout2``) or written for a later trial (``x-sn``) and not kept. ``TUNE_THREADS`` (default 1) sets torch's threads for the trials.

  python benchmarks/tuning_sweep.py --setup benchmarks/tuning_variants.py --rounds 4000 --eval-every 500 \\
      --trial convout2:model.name=x-convout2,train.lr_g=2e-3
"""
import os

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from distgan.models import MODELS, ModelFactory
from distgan.models.mlp import tuned_mlp

torch.set_num_threads(int(os.environ.get("TUNE_THREADS", "1")))


@MODELS.register("x-sn", "tuned mlp with spectral norm on D's linear layers")
def x_sn(config, image_shape):
    base = tuned_mlp(config, image_shape)
    def discriminator():
        d = base.discriminator()
        for i, layer in enumerate(d.layers):
            if isinstance(layer, nn.Linear):
                d.layers[i] = spectral_norm(layer)
        return d
    return ModelFactory(base.generator, discriminator, base.latent_dim, image_shape)





class ConvOut2Generator(nn.Module):
    """The tuned MLP body to 16 maps at 7x7, then two 2x transposed convs (16 -> 8 -> 1)."""
    def __init__(self, latent, hidden, image_shape):
        super().__init__()
        c, h, _w = image_shape
        self.side = h // 4
        maps = 16 * self.side * self.side
        self.body = nn.Sequential(
            nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, maps), nn.BatchNorm1d(maps), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.LeakyReLU(0.2),
                                  nn.ConvTranspose2d(8, c, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        return self.head(self.body(z).view(z.shape[0], 16, self.side, self.side))


@MODELS.register("x-convout2", "tuned mlp G ending in two 2x transposed convs (16 at 7x7, 8 at 14x14)")
def x_convout2(config, image_shape):
    base = tuned_mlp(config, image_shape)
    return ModelFactory(lambda: ConvOut2Generator(config.latent_dim, config.hidden, image_shape),
                        base.discriminator, base.latent_dim, image_shape)

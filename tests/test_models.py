"""Model families: shapes, and the mlp discriminator's width knob."""

from __future__ import annotations

import pytest
import torch

from distgan.config import ModelConfig
from distgan.models import build_models


@pytest.mark.parametrize("name", ["mlp", "mlp-up", "paper-mlp"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_mlp_family_maps_latents_to_images_and_images_to_one_logit(name: str, shape) -> None:
    factory = build_models(ModelConfig(name=name, hidden=16, latent_dim=8), shape)
    generator, discriminator = factory.generator(), factory.discriminator()
    images = generator(torch.randn(5, 8))
    assert images.shape == (5, *shape) and images.abs().max() <= 1
    assert discriminator(images).shape == (5,)


def test_d_hidden_narrows_the_discriminator_only() -> None:
    def weights(module: torch.nn.Module) -> int:
        return sum(parameter.numel() for parameter in module.parameters())

    default, narrow = (build_models(ModelConfig(d_hidden=d_hidden), (1, 28, 28)) for d_hidden in (None, 32))
    assert weights(narrow.discriminator()) == 784 * 64 + 64 + 64 * 32 + 32 + 32 + 1
    assert weights(default.discriminator()) == 784 * 512 + 512 + 512 * 256 + 256 + 256 + 1
    assert weights(narrow.generator()) == weights(default.generator())
    with pytest.raises(ValueError, match="model.d_hidden"):
        ModelConfig(d_hidden=0)


@pytest.mark.parametrize("size", [64, 32, 28])
@pytest.mark.parametrize("pool", ["stride", "max"])
def test_dcgan_discriminator_halves_by_stride_or_by_table_3s_max_pooling(size: int, pool: str) -> None:
    factory = build_models(ModelConfig(name="dcgan", channels=4, latent_dim=8, d_pool=pool), (3, size, size))
    discriminator = factory.discriminator()
    assert discriminator(factory.generator()(torch.randn(2, 8))).shape == (2,)
    pools = [m for m in discriminator.modules() if isinstance(m, torch.nn.MaxPool2d)]
    # Table 3: max_pool2d after the first two LeakyReLUs, and nowhere else.
    assert len(pools) == (2 if pool == "max" else 0)
    with pytest.raises(ValueError, match="model.d_pool"):
        ModelConfig(d_pool="avg")


def test_mlp_up_refuses_odd_image_sides_and_names_the_fallback() -> None:
    with pytest.raises(ValueError, match="even sides.*model.name=mlp"):
        build_models(ModelConfig(name="mlp-up", hidden=16, latent_dim=8), (1, 27, 27)).generator()

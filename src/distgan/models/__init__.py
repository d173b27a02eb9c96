"""Model families (a registry). Each builds a generator and a discriminator for an image shape.

Discriminators return one *logit* per sample. The paper's final ``Sigmoid`` (Tables 1 and 3) is
applied inside the loss (``BCEWithLogits``): the same function, without float32 saturation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from distgan.config import ModelConfig
from distgan.registry import Registry

ImageShape = tuple[int, int, int]


@dataclass(frozen=True)
class ModelFactory:
    """Builds fresh networks; parties call ``discriminator()``, the coordinator ``generator()``."""

    generator: Callable[[], nn.Module]
    discriminator: Callable[[], nn.Module]
    latent_dim: int
    image_shape: ImageShape


ModelBuilder = Callable[[ModelConfig, ImageShape], ModelFactory]
MODELS: Registry[ModelBuilder] = Registry("model")


def build_models(config: ModelConfig, image_shape: ImageShape) -> ModelFactory:
    return MODELS.get(config.name)(config, image_shape)


def natural_image_size(config: ModelConfig) -> int | None:
    """The image side a model wants when the data does not say (None: any)."""
    return 64 if config.name == "dcgan" else None


from distgan.models import dcgan, mlp  # noqa: F401  (register the families)

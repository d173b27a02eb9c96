"""Generated images: latents -> images in eval mode (the one place), and a run's generator loaded from
its checkpoint to sample from; no data is needed."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distgan import run_folder
from distgan.checkpoint import unprefixed
from distgan.config import Config
from distgan.models import build_models
from distgan.models.conditional import generated_labels, label_conditional

SAMPLE_CHUNK = 500
"""Latents per forward pass when sampling (bounds memory; the images do not depend on it)."""


def load_generator(run_dir: Path, round_number: int | None = None) -> tuple[nn.Module, Config, int]:
    """The sampling generator of ``run_dir`` at ``round_number`` (default: the newest intact checkpoint)."""
    config = run_folder.load_config(run_dir)
    tensors, meta = run_folder.newest_intact(run_folder.checkpoint_dir(run_dir), round_number)
    prefix = "sampler" if any(k.startswith("sampler/") for k in tensors) else "generator"
    weights = unprefixed(prefix, tensors)
    image_shape = tuple(meta["image_shape"])
    factory = build_models(config.model, image_shape) if "label_weights" not in weights else \
        label_conditional(config.model, image_shape, len(weights["label_weights"]))  # type: ignore[arg-type]
    generator = factory.generator()
    generator.load_state_dict(weights)
    generator.eval()
    return generator, config, int(meta["round"])


def seeded_latents(count: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The latent vectors of ``seed``: the same seed gives the same images in training-time metrics,
    ``distgan evaluate``, ``distgan sample`` and the Python API."""
    return torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def images_from_latents(generator: nn.Module, latents: torch.Tensor, device: torch.device | str | None = None,
                        ) -> torch.Tensor:
    """Float32 CPU images in [-1, 1] for ``latents``, in eval mode (batch norm uses running statistics);
    the generator's train/eval mode is restored afterwards."""
    was_training = generator.training
    generator.eval()
    try:
        if not len(latents):
            return torch.empty(0)
        return torch.cat([generator(chunk.to(device) if device is not None else chunk).float().cpu()
                          for chunk in latents.split(SAMPLE_CHUNK)])
    finally:
        generator.train(was_training)


def generate(generator: nn.Module, count: int, seed: int, latent_dim: int,
             device: torch.device | str | None = None) -> torch.Tensor:
    """``count`` images in [-1, 1] from seeded latents, in eval mode."""
    return images_from_latents(generator, seeded_latents(count, latent_dim, seed), device)


def generate_labelled(generator: nn.Module, count: int, seed: int, latent_dim: int,
                      device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`generate`'s images and, for a label-conditional G, the label each was made for (else None)."""
    latents = seeded_latents(count, latent_dim, seed)
    return images_from_latents(generator, latents, device), generated_labels(generator, latents)

"""Load a run's generator from its checkpoint and draw samples; no data is needed."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distgan.checkpoint import CheckpointError, load_checkpoint, unprefixed
from distgan.config import Config
from distgan.coordinator import checkpoint_stems
from distgan.models import build_models
from distgan.models.conditional import generated_labels, label_conditional


def load_generator(run_dir: Path, round_number: int | None = None) -> tuple[nn.Module, Config, int]:
    """The sampling generator of ``run_dir`` at ``round_number`` (default: the newest intact checkpoint)."""
    from distgan.training import load_run_config

    config = load_run_config(run_dir)
    stems = checkpoint_stems(run_dir / "checkpoints")
    if round_number is not None:
        stems = [s for s in stems if s.name == f"round-{round_number:07d}"]
        if not stems:
            raise CheckpointError(f"{run_dir}: no checkpoint of round {round_number}")
    errors = []
    for stem in reversed(stems):
        try:
            tensors, meta = load_checkpoint(stem)
        except CheckpointError as error:
            errors.append(str(error))
            continue
        prefix = "sampler" if any(k.startswith("sampler/") for k in tensors) else "generator"
        weights = unprefixed(prefix, tensors)
        image_shape = tuple(meta["image_shape"])
        factory = build_models(config.model, image_shape) if "label_weights" not in weights else \
            label_conditional(config.model, image_shape, len(weights["label_weights"]))  # type: ignore[arg-type]
        generator = factory.generator()
        generator.load_state_dict(weights)
        generator.eval()
        return generator, config, int(meta["round"])
    raise CheckpointError(f"{run_dir}: no usable checkpoint ({'; '.join(errors) or 'none written yet'})")


@torch.no_grad()
def generate_labelled(generator: nn.Module, count: int, seed: int, latent_dim: int,
                      chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`generate`'s images and, for a label-conditional G, the label of each (else None)."""
    latents = torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))
    return generate(generator, count, seed, latent_dim, chunk), generated_labels(generator, latents)


@torch.no_grad()
def generate(generator: nn.Module, count: int, seed: int, latent_dim: int, chunk: int = 500) -> torch.Tensor:
    """``count`` images in [-1, 1] from seeded latents, in eval mode."""
    rng = torch.Generator().manual_seed(seed)
    latents = torch.randn(count, latent_dim, generator=rng)
    generator.eval()
    return torch.cat([generator(part) for part in latents.split(chunk)]) if count else torch.empty(0)

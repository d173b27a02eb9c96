"""Coarse rounds for Flower deployment: the same training, cut into fewer, bigger messages.

Deployment costs seconds per message whatever it carries (Flower starts a ClientApp process per
message and nodes poll every 3 s), so a deployed run does many D and G steps per message instead
of the simulator's one and runs proportionally fewer rounds: the total number of steps, and the
number of sample grids, checkpoints and progress lines, stay those of the config.

How many? Strategies that exchange per-step feedback carry one batch of generated images down and
one batch of gradients up per step, so message size grows with the steps; the default takes as
many steps as fit in ``MESSAGE_BUDGET_BYTES`` of generated images (MNIST at batch 64: 668 steps,
128 MiB each way). Measured overhead at this default: ``benchmarks/flower_overhead.py`` and the
README's Flower section. (Weight-exchanging strategies — fedgan, local-only — send the
same bytes whatever the steps; raise ``--local-steps`` for them.)
"""

from __future__ import annotations

import math

from distgan.config import Config

MESSAGE_BUDGET_BYTES = 128 * 2**20
"""Generated images per message (float32) that the default local_steps may carry."""
MAX_LOCAL_STEPS = 2000

CADENCE_FIELDS = ("sample_every", "checkpoint_every", "eval_every", "log_every")


def deployment_local_steps(image_shape: tuple[int, int, int], batch_size: int) -> int:
    """Steps per message whose generated images fill the message budget (at least 1)."""
    bytes_per_step = batch_size * math.prod(image_shape) * 4
    return max(1, min(MAX_LOCAL_STEPS, MESSAGE_BUDGET_BYTES // bytes_per_step))


def coarse_rounds(config: Config, local_steps: int, keep: frozenset[str] = frozenset()) -> Config:
    """``config`` with ``local_steps`` steps per message and rounds (and output cadences) divided
    accordingly; fields named in ``keep`` (``train.rounds``, ``output.log_every``...) stay as set."""
    factor = local_steps / config.train.local_steps
    if factor <= 1:
        return config
    assignments = [f"train.local_steps={local_steps}"]
    if "train.rounds" not in keep:
        assignments.append(f"train.rounds={max(1, math.ceil(config.train.rounds / factor))}")
    for name in CADENCE_FIELDS:
        if f"output.{name}" not in keep:
            assignments.append(f"output.{name}={max(1, round(getattr(config.output, name) / factor))}")
    return config.with_overrides(assignments)

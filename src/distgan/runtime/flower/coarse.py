"""Coarse rounds for Flower: the same training, cut into fewer, bigger messages.

Deployment costs seconds per message whatever it carries (Flower starts a ClientApp process per
message, and nodes poll), so a Flower run does ``FLOWER_LOCAL_STEPS`` D and G steps per message
instead of the simulator's 1 and runs proportionally fewer rounds: the total number of steps,
and the number of sample grids, checkpoints and progress lines, stay those of the config.
Measured in ``benchmarks/flower_overhead.py`` (see the README's Flower section).
"""

from __future__ import annotations

import math

from distgan.config import Config

FLOWER_LOCAL_STEPS = 200
"""Default ``train.local_steps`` of a Flower run whose config leaves it at 1."""

CADENCE_FIELDS = ("sample_every", "checkpoint_every", "eval_every", "log_every")


def coarse_rounds(config: Config, local_steps: int = FLOWER_LOCAL_STEPS, keep: frozenset[str] = frozenset()) -> Config:
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

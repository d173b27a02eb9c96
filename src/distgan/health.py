"""Is the run the algorithm it claims to be, and is it still learning? Said loudly when not.

Two checks, on every runtime (``distgan train``, ``flower local/app/simulate``):

- **Stale feedback.** The feedback strategies (avg-output, md-gan, round-robin, centralized) are the
  paper's per-batch algorithms at ``train.local_steps = 1``. With S > 1 steps per message, D_j trains
  S steps on fakes G made before the message, and G then takes S steps on that feedback while it
  moves away from the fakes that were scored: a different algorithm, and at large S one that does
  not work. Measured (bundled MNIST, 2 parties, labels 0-4 | 5-9, default MLP, batch 128, 1,336 G
  steps in each run; ``distgan train --strategy S --local-steps L --rounds 1336/L``):
  :data:`MEASURED_STALENESS`. No runtime changes ``local_steps`` behind the user's back (Flower
  deployment runs the configured steps per message), and a run with S > 1 logs a warning naming
  the measured consequence (:func:`stale_feedback_warning`).
- **Collapse.** :class:`CollapseDetector` watches every round: when every discriminator scores real
  and generated batches alike *at the bound of its logit* (D gives every input the same saturated
  answer: nothing left for G to learn from) for :func:`collapse_window` rounds in a row, or G's loss
  does not move at all over that window, it logs an error, writes ``health.json`` (the report shows
  it in red) and ``collapsed`` is set; Flower's ServerApp then ends the run as failed, so
  ``flwr ls`` says ``finished:failed`` with the reason instead of ``finished:completed``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distgan import run_folder
from distgan.checkpoint import atomic_write_text
from distgan.config import Config

log = logging.getLogger("distgan")

MEASURED_STALENESS = ("avg-output: cfid 48.6 and 10/10 digits at 1 step per message, cfid ~414 (noise: every D "
                      "saturated at its logit bound from round 2) at 334 steps per message")
HEALTH_FILE = run_folder.HEALTH


class CollapseError(RuntimeError):
    """The run finished, but its generator collapsed (``health.json`` says when and why)."""


def stale_feedback_warning(config: Config) -> str | None:
    """Why ``config`` is not the per-step algorithm its strategy names, or None when it is."""
    from distgan.strategies import STRATEGIES

    steps = config.train.local_steps  # G steps on per-step D feedback carried by the message: 1 is exact
    if steps == 1 or not STRATEGIES.get(config.strategy.name).learns_from_feedback(config):
        return None
    return (f"{config.strategy.name} with train.local_steps={steps}: every message carries {steps} D steps on "
            f"fakes made before it and {steps} G steps on that stale feedback, which is not the per-step "
            f"algorithm (local_steps=1) and, at many steps per message, does not learn ({MEASURED_STALENESS})")


def collapse_window(config: Config) -> int:
    """Rounds of saturation that count as a collapse: about 200 G steps' worth, at least 3 rounds."""
    return max(3, math.ceil(200 / config.train.local_steps))


@dataclass
class CollapseDetector:
    """A coordinator round hook; see the module docstring."""

    window: int
    logit_bound: float | None
    run_dir: Path
    collapsed_at: int | None = None
    reason: str = ""
    _saturated_rounds: int = 0
    _g_losses: list[float] = field(default_factory=list)

    TOLERANCE = 0.02
    """How close to the bound's probability (and to each other) D's mean scores must be."""
    FLAT_G_LOSS = 1e-6
    """G's loss moving less than this over the whole window: nothing is being learned."""

    @classmethod
    def for_run(cls, config: Config, run_dir: Path) -> CollapseDetector:
        from distgan.models.mlp import LOGIT_BOUNDED_MODELS  # torch only when a run starts

        bound = config.model.d_logit_bound if config.model.name in LOGIT_BOUNDED_MODELS else None
        return cls(collapse_window(config), bound, run_dir)

    @property
    def collapsed(self) -> bool:
        return self.collapsed_at is not None

    def _saturated(self, real: float, fake: float) -> bool:
        """D answers real and fake alike, at the edge of what its output can say."""
        if abs(real - fake) > self.TOLERANCE:
            return False
        if self.logit_bound is not None:
            high = 1.0 / (1.0 + math.exp(-self.logit_bound))
            return min(abs(real - high), abs(real - (1.0 - high))) <= self.TOLERANCE
        return real >= 1.0 - self.TOLERANCE or real <= self.TOLERANCE

    def __call__(self, coordinator: object, round_number: int, record: dict[str, Any]) -> None:
        parties = record.get("parties") or {}
        if not parties:
            return  # a round no party answered says nothing about G
        saturated = all(self._saturated(float(s["d_real"]), float(s["d_fake"]))
                                          for s in parties.values())
        self._saturated_rounds = self._saturated_rounds + 1 if saturated else 0
        self._g_losses = (self._g_losses + [float(record["g_loss"])])[-self.window:]
        flat = len(self._g_losses) == self.window and max(self._g_losses) - min(self._g_losses) < self.FLAT_G_LOSS
        if self.collapsed or not (self._saturated_rounds >= self.window or flat):
            return
        self.collapsed_at = round_number
        first = round_number - self.window + 1
        if self._saturated_rounds >= self.window:
            self.reason = (f"every discriminator has scored real and generated images alike at its logit bound "
                           f"since round {first} (G loss {record['g_loss']:.3f}): G gets no signal, its samples "
                           "are noise")
        else:
            self.reason = f"G's loss has not moved since round {first} ({record['g_loss']:.6f})"
        log.error("TRAINING COLLAPSED at round %d: %s", round_number, self.reason)
        atomic_write_text(self.run_dir / HEALTH_FILE, json.dumps(
            {"collapsed": True, "round": round_number, "reason": self.reason}, indent=2) + "\n")

    def raise_if_collapsed(self) -> None:
        if self.collapsed:
            raise CollapseError(f"training collapsed at round {self.collapsed_at}: {self.reason} "
                                f"(see {self.run_dir / HEALTH_FILE})")


def read_health(run_dir: Path) -> dict[str, Any] | None:
    """``health.json`` of a run, or None when the run never collapsed."""
    path = run_dir / HEALTH_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None

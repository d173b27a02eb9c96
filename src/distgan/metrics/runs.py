"""Metrics of a run: during training (a coordinator hook), at its end, and afterwards from a checkpoint.

Every ``output.eval_every`` rounds the cheap metrics run and one line goes to ``metrics.jsonl``:
``{"round": R, "elapsed_s": T, "metrics": {"cfid": ..., "coverage/classes": ..., ...}}``; the
headline numbers also appear in that round's progress line. After the last round the full set
runs (``tstr`` included). ``distgan evaluate`` recomputes the same numbers for any checkpoint:
metrics draw the same latent vectors (``EVAL_LATENT_SEED``) in both places.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from distgan import run_folder
from distgan.metrics.base import (
    METRICS,
    EvalContext,
    EvalSettings,
    MetricUnavailable,
    MetricValues,
    PartyLabels,
    compute_metrics,
    default_metrics,
)
from distgan.models.conditional import generated_labels
from distgan.sampling import generate, load_generator, seeded_latents

if TYPE_CHECKING:
    from distgan.config import Config
    from distgan.coordinator import Coordinator

log = logging.getLogger("distgan")

METRICS_FILE = run_folder.METRICS
HEADLINE = ("cfid", "coverage/classes", "cis", "fid")
"""Scalars shown in the progress line (when computed)."""


def select_metrics(config: Config, image_shape: tuple[int, int, int], names: list[str] | None = None) -> list[str]:
    """The metrics a run computes: explicit names (validated), else the defaults for its data."""
    chosen = list(names if names is not None else config.output.metrics or [])
    for name in chosen:
        METRICS.get(name)  # unknown names fail here, listing the valid ones
    if names is None and config.output.metrics is None:
        chosen = default_metrics(image_shape, config.data.source)
    return chosen


def no_metrics_note(config: Config, image_shape: tuple[int, int, int]) -> str:
    return (f"no default metrics for data {config.data.source!r} with {'x'.join(map(str, image_shape))} images: "
            "the digit metrics (cfid, coverage, ...) need MNIST; Inception FID needs a public reference set: "
            "distgan evaluate RUN_DIR --metrics fid --reference DIR")


def headline(values: MetricValues) -> dict[str, float]:
    return {k: float(values[k]) for k in HEADLINE if isinstance(values.get(k), (int, float))}


def format_values(values: MetricValues) -> str:
    """One log line: scalars, and the short lists of missing labels (histograms stay in the file)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, int) or (isinstance(value, list) and key.endswith("missing")):
            parts.append(f"{key} {value}")
    return " | ".join(parts)


append_metrics = run_folder.append_metrics
read_metrics = run_folder.read_metrics


def parties_of(run_dir: Path) -> PartyLabels | None:
    path = run_dir / run_folder.PARTIES
    return PartyLabels.load(path) if path.exists() else None


class RunMetrics:
    """The coordinator hooks: cheap metrics every ``eval_every`` rounds, the full set at the end."""

    def __init__(self, coordinator: Coordinator, settings: EvalSettings | None = None) -> None:
        self.coordinator = coordinator
        config = coordinator.config
        self.settings = settings or EvalSettings(device=coordinator.trainer.device)
        self.image_shape = coordinator.trainer.factory.image_shape
        self.names = select_metrics(config, self.image_shape)
        self.cheap = [n for n in self.names if METRICS.get(n).cheap]
        if not self.names:
            log.info(no_metrics_note(config, self.image_shape))
        else:
            self._check_applicable()

    def _check_applicable(self) -> None:
        """Fail before training, not after it, when a chosen metric cannot run on this run's images."""
        probe = EvalSettings(generated=2, seed=self.settings.seed, reference=self.settings.reference,
                             inception_weights=self.settings.inception_weights, device=self.settings.device)
        if "fid" in self.names:
            from distgan.metrics.inception import inception_features

            inception_features(probe.inception_weights, str(probe.device))
        digit_names = [n for n in self.names if n != "fid"]
        if digit_names:
            from distgan.metrics.digits import generated_outputs

            generated_outputs(EvalContext(lambda n, s: torch.zeros(n, *self.image_shape), self.image_shape, None,
                                          probe))

    def context(self) -> EvalContext:
        coordinator = self.coordinator
        latent_dim, device = coordinator.trainer.factory.latent_dim, coordinator.trainer.device

        def sample(count: int, seed: int) -> torch.Tensor:
            return generate(coordinator.strategy.sampling_generator(), count, seed, latent_dim, device)

        def labels(count: int, seed: int) -> torch.Tensor | None:
            return generated_labels(coordinator.strategy.sampling_generator(), seeded_latents(count, latent_dim, seed))

        return EvalContext(sample, self.image_shape, parties_of(coordinator.run_dir), self.settings, labels)

    def measure(self, names: list[str]) -> MetricValues:
        started = time.perf_counter()
        values = compute_metrics(self.context(), names, skip_unavailable=True)
        values["time/eval_s"] = time.perf_counter() - started
        return values

    def on_round(self, coordinator: Coordinator, round_number: int, record: dict) -> None:
        total = coordinator.config.train.rounds
        if not self.cheap or round_number % coordinator.config.output.eval_every or round_number == total:
            return  # the last round gets the full set from on_end
        try:
            values = self.measure(self.cheap)
        except (MetricUnavailable, ValueError) as error:
            log.warning("metrics at round %d failed: %s", round_number, error)
            return
        append_metrics(coordinator.run_dir, round_number, values, coordinator.elapsed_s)
        record["metrics"] = headline(values)
        log.info("metrics round %d: %s", round_number, format_values(values))

    def on_end(self, coordinator: Coordinator) -> None:
        if not self.names:
            return
        try:
            values = self.measure(self.names)
        except (MetricUnavailable, ValueError) as error:
            log.warning("final metrics failed: %s", error)
            return
        append_metrics(coordinator.run_dir, coordinator.round, values, coordinator.elapsed_s)
        log.info("final metrics, round %d: %s", coordinator.round, format_values(values))


def attach_metrics(coordinator: Coordinator, settings: EvalSettings | None = None) -> RunMetrics:
    run_metrics = RunMetrics(coordinator, settings)
    coordinator.hooks.append(run_metrics.on_round)
    coordinator.end_hooks.append(run_metrics.on_end)
    return run_metrics


def evaluate_run(run_dir: Path, round_number: int | None = None, names: list[str] | None = None,
                 settings: EvalSettings | None = None) -> tuple[int, MetricValues]:
    """Recompute metrics for a run's checkpoint (default: the newest). Needs no data."""
    generator, config, found_round = load_generator(run_dir, round_number)
    settings = settings or EvalSettings()
    generator = generator.to(settings.device)
    image_shape = tuple(generator(torch.zeros(2, config.model.latent_dim, device=settings.device)).shape[1:])
    chosen = select_metrics(config, image_shape, names)  # type: ignore[arg-type]
    if not chosen:
        raise MetricUnavailable(no_metrics_note(config, image_shape))  # type: ignore[arg-type]

    def sample(count: int, seed: int) -> torch.Tensor:  # the latents of training-time metrics
        return generate(generator, count, seed, config.model.latent_dim, settings.device)

    def labels(count: int, seed: int) -> torch.Tensor | None:
        return generated_labels(generator, seeded_latents(count, config.model.latent_dim, seed))

    context = EvalContext(sample, image_shape, parties_of(run_dir), settings, labels)  # type: ignore[arg-type]
    return found_round, compute_metrics(context, chosen)

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
from distgan.metrics.domains import DomainDecision, RunEvaluation, run_domain, run_evaluation
from distgan.models.conditional import generated_labels
from distgan.sampling import generate, load_generator, seeded_latents

if TYPE_CHECKING:
    from distgan.config import Config
    from distgan.coordinator import Coordinator

log = logging.getLogger("distgan")

METRICS_FILE = run_folder.METRICS
HEADLINE = ("cfid", "fd-sharp", "coverage/classes", "cis", "fid")
"""Scalars shown in the progress line (when computed)."""


def select_metrics(config: Config, image_shape: tuple[int, int, int], names: list[str] | None = None,
                   domain: str | None = None) -> list[str]:
    """The metrics a run computes: explicit names (validated), else the defaults for its domain."""
    chosen = list(names if names is not None else config.output.metrics or [])
    for name in chosen:
        METRICS.get(name)  # unknown names fail here, listing the valid ones
    if names is None and config.output.metrics is None:
        chosen = default_metrics(image_shape, domain)
    return chosen


def no_metrics_note(config: Config, image_shape: tuple[int, int, int], reason: str = "") -> str:
    return (f"no default metrics for data {config.data.source!r} with {'x'.join(map(str, image_shape))} images: "
            f"the labelled metrics (cfid, coverage, ...) are unavailable ({reason or 'no evaluation domain'}); "
            "Inception FID needs a public reference set: distgan evaluate RUN_DIR --metrics fid --reference DIR")


UNAVAILABLE_KEY = "evaluator"
"""metrics.jsonl key naming the evaluator's domain, or ``unavailable: <why>`` instead of labelled numbers."""


def decide_evaluation(config: Config) -> tuple[DomainDecision, RunEvaluation | None]:
    decision = run_domain(config)
    return decision, run_evaluation(config, decision)


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
        self.decision, self.evaluation = decide_evaluation(config)
        log.info("evaluation domain: %s", self.decision.note)
        self.names = select_metrics(config, self.image_shape, domain=self.decision.domain)
        self.cheap = [n for n in self.names if METRICS.get(n).cheap]
        if not self.names:
            log.info(no_metrics_note(config, self.image_shape, self.decision.note))
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
                                          probe, evaluation=self.evaluation,
                                          no_evaluation_reason=self.decision.note))

    def context(self) -> EvalContext:
        coordinator = self.coordinator
        latent_dim, device = coordinator.trainer.factory.latent_dim, coordinator.trainer.device

        def sample(count: int, seed: int) -> torch.Tensor:
            return generate(coordinator.strategy.sampling_generator(), count, seed, latent_dim, device)

        def labels(count: int, seed: int) -> torch.Tensor | None:
            return generated_labels(coordinator.strategy.sampling_generator(), seeded_latents(count, latent_dim, seed))

        return EvalContext(sample, self.image_shape, parties_of(coordinator.run_dir), self.settings, labels,
                           evaluation=self.evaluation, no_evaluation_reason=self.decision.note)

    def measure(self, names: list[str]) -> MetricValues:
        started = time.perf_counter()
        values = compute_metrics(self.context(), names, skip_unavailable=True)
        values[UNAVAILABLE_KEY] = evaluator_statement(self.decision)
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
            if self.decision.domain is None:  # say so in metrics.jsonl (and so the report), not only the log
                append_metrics(coordinator.run_dir, coordinator.round,
                               {UNAVAILABLE_KEY: evaluator_statement(self.decision)}, coordinator.elapsed_s)
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
    decision, evaluation = decide_evaluation(config)
    chosen = select_metrics(config, image_shape, names, decision.domain)  # type: ignore[arg-type]
    if not chosen:
        raise MetricUnavailable(no_metrics_note(config, image_shape, decision.note))  # type: ignore[arg-type]

    def sample(count: int, seed: int) -> torch.Tensor:  # the latents of training-time metrics
        return generate(generator, count, seed, config.model.latent_dim, settings.device)

    def labels(count: int, seed: int) -> torch.Tensor | None:
        return generated_labels(generator, seeded_latents(count, config.model.latent_dim, seed))

    context = EvalContext(sample, image_shape, parties_of(run_dir), settings, labels,  # type: ignore[arg-type]
                          evaluation=evaluation, no_evaluation_reason=decision.note)
    values = compute_metrics(context, chosen)
    values[UNAVAILABLE_KEY] = evaluator_statement(decision)
    return found_round, values


def evaluator_statement(decision: DomainDecision) -> str:
    """``digits`` / ``fashion``: the evaluator that made the labelled numbers; or why there are none."""
    return decision.domain if decision.domain is not None else f"unavailable: {decision.note}"

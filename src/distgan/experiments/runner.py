"""One run of an experiment: train it under its budget (stopping rules), evaluate it, its result row."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distgan import run_folder
from distgan.checkpoint import atomic_write_text
from distgan.config import Config
from distgan.coordinator import Coordinator, RoundHook
from distgan.experiments.definitions import RunSpec, generator_steps_per_round

# One line per run; not a child of the "distgan" logger, whose handlers write the current run's log.txt.
log = logging.getLogger("distgan_experiments")


# -- stopping rules ---------------------------------------------------------------------------------------
class WallTimeLimit:
    """Round hook: stop once the coordinator's training time reaches the budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, coordinator: Coordinator, round_number: int, record: dict[str, Any]) -> None:
        if coordinator.elapsed_s >= self.seconds and coordinator.stop_reason is None:
            coordinator.stop_reason = f"wall-time budget of {self.seconds:g} s reached"


@dataclass
class TargetWatch:
    """Round hook: note when a metric measured during training first reaches the target, and stop."""

    metric: str
    """A lower-is-better metric of the run's cheap set (``cfid``, ``fd-sharp``)."""
    target: float
    reached_round: int | None = None
    reached_elapsed_s: float | None = None
    history: list[tuple[int, float, float]] = field(default_factory=list)
    """(round, training seconds, value of the metric) of every measurement."""

    def __call__(self, coordinator: Coordinator, round_number: int, record: dict[str, Any]) -> None:
        measured = record.get("metrics")
        if not measured:
            return  # no measurement this round
        if self.metric not in measured:
            # A target the run never measures would train to the cap and report "not reached".
            raise ValueError(f"the budget's target metric {self.metric!r} is not among the metrics this run "
                             f"measures during training ({', '.join(sorted(measured))})")
        value = float(measured[self.metric])
        self.history.append((round_number, coordinator.elapsed_s, value))
        if value <= self.target and self.reached_round is None:
            self.reached_round, self.reached_elapsed_s = round_number, coordinator.elapsed_s
            coordinator.stop_reason = f"{self.metric} {value:.1f} reached the target {self.target:g}"


# -- one run ----------------------------------------------------------------------------------------------
RunEvaluator = Callable[[Path], dict[str, Any]]
"""Final metrics of a finished run folder, keyed by :data:`METRIC_COLUMNS` (None: not applicable)."""
COPIED_METRICS: dict[str, str] = {
    "cfid": "cfid", "fd_sharp": "fd-sharp", "coverage": "coverage/classes",
    "precision": "precision", "recall": "recall", "tstr": "tstr/accuracy",
}
"""Row key -> the ``metrics.jsonl`` value it copies as it is."""
METRIC_COLUMNS = (*COPIED_METRICS, "party_coverage")
"""The metric keys of a run's row (party_coverage is derived from the per-party values)."""
RESULT_FILE = "experiment-row.json"


def final_metrics(run_dir: Path) -> dict[str, Any]:
    """The table's metrics of the run's final generator, as the evaluation module computed them at the
    end of training (``metrics.jsonl``); recomputed from the last checkpoint when that line is missing.
    Runs on data without digit metrics (image folders) get None."""
    from distgan.metrics import MetricUnavailable, evaluate_run, read_metrics

    last_round = max((record["round"] for record in run_folder.read_stats(run_dir)), default=0)
    lines = read_metrics(run_dir)
    if lines and lines[-1]["round"] == last_round and "cfid" in lines[-1]["metrics"]:
        values = lines[-1]["metrics"]
    else:
        try:
            _, values = evaluate_run(run_dir)
        except MetricUnavailable as error:
            log.info("%s: no metrics (%s)", run_dir, error)
            values = {}
    return table_metrics(values)


def table_metrics(values: dict[str, Any]) -> dict[str, Any]:
    """A run's row metrics from its ``metrics.jsonl`` values: cfid; fd_sharp = the Fréchet distance in the
    sharp LeNet's features; coverage = classes covered (of 10); precision / recall on the sharp features'
    k-NN manifolds; tstr = held-out accuracy of a classifier trained on samples; party_coverage = the mean
    over parties of the fraction of each party's labels the generator makes. None: not computed."""
    shares = [float(v) for k, v in values.items() if re.fullmatch(r"party-coverage/party-\d+", k)]

    def number(key: str) -> float | None:
        value = values.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    return {**{row_key: number(key) for row_key, key in COPIED_METRICS.items()},
            "party_coverage": statistics.fmean(shares) if shares else None,
            "party_coverage_min": min(shares) if shares else None,
            "missing_digits": values.get("coverage/missing")}


def train_and_evaluate(spec: RunSpec, out_dir: Path, evaluate: RunEvaluator = final_metrics,
                       quiet: bool = True) -> dict[str, Any]:
    """Train one run of an experiment from scratch under its limits, evaluate it, write its result file."""
    from distgan.training import check_new_run_dir, train

    run_dir = out_dir / "runs" / spec.name
    check_new_run_dir(run_dir, overwrite=True)  # an unfinished run from an earlier call starts over
    hooks: list[RoundHook] = []
    watch = (TargetWatch(spec.limits.target_metric, spec.limits.target)
             if spec.limits.target is not None else None)
    if spec.limits.wall_time_s is not None:
        hooks.append(WallTimeLimit(spec.limits.wall_time_s))
    if watch is not None:
        hooks.append(watch)
    cpu_before, load_before = _cpu_seconds(), os.getloadavg()[0]
    if spec.transport == "flower-simulation":
        from distgan.runtime.flower.simulation import train_in_simulation

        coordinator = train_in_simulation(spec.config, run_dir, round_hooks=hooks)
    else:
        coordinator = train(spec.config, run_dir, quiet=quiet, round_hooks=hooks)
    cpu_s = _cpu_seconds() - cpu_before
    row = _row(spec, run_dir, coordinator, watch, cpu_s)
    # The machine's 1-minute load average before and after: wall times mean little on a busy machine.
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    row.update(evaluate(run_dir))
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(row, indent=1))
    return row


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _finished_row(run_dir: Path, spec: RunSpec) -> dict[str, Any] | None:
    """The row of a run an earlier call finished with the same config, else None."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        row = json.loads(path.read_text())
        saved = Config.load(run_dir / run_folder.CONFIG)
    except (ValueError, OSError):
        return None
    return row if saved.to_dict() == spec.config.to_dict() else None


def _row(spec: RunSpec, run_dir: Path, coordinator: Coordinator, watch: TargetWatch | None,
         cpu_s: float) -> dict[str, Any]:
    config = coordinator.config
    stats = run_folder.read_stats(run_dir)
    g_losses = [record["g_loss"] for record in stats]
    tenth = max(1, len(g_losses) // 10)
    row: dict[str, Any] = {
        "experiment": spec.experiment, "variant": spec.variant, "budget": spec.budget, "seed": spec.seed,
        "strategy": config.strategy.name, "parties": config.data.parties, "split": config.data.split,
        "workers": config.runtime.workers, "transport": spec.transport, "rounds": coordinator.round,
        "generator_steps": coordinator.round * generator_steps_per_round(config),
        "wall_time_s": coordinator.elapsed_s, "cpu_s": cpu_s,
        "bytes_up": sum(record["bytes_up"] for record in stats),
        "bytes_down": sum(record["bytes_down"] for record in stats),
        "g_loss_first_tenth": statistics.fmean(g_losses[:tenth]) if g_losses else None,
        "g_loss_last_tenth": statistics.fmean(g_losses[-tenth:]) if g_losses else None,
        "stop_reason": coordinator.stop_reason, "run_dir": f"runs/{spec.name}",
    }
    if watch is not None:
        row.update({"target_metric": watch.metric, "target": watch.target, "reached_target": watch.reached_round is not None,
                    "time_to_target_s": watch.reached_elapsed_s, "rounds_to_target": watch.reached_round,
                    "target_history": watch.history})
    return row

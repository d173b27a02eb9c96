"""Many runs: train every run of a set (reusing finished ones), one after another or ``jobs`` at once."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from distgan.experiments.definitions import DEFAULT_SEEDS, EXPERIMENTS, RunSpec, plan_runs
from distgan.experiments.runner import RunEvaluator, _finished_row, final_metrics, train_and_evaluate
from distgan.experiments.tables import write_comparison_report, write_summary

# One line per run; not a child of the "distgan" logger, whose handlers write the current run's log.txt.
log = logging.getLogger("distgan_experiments")


def run_set(specs: Sequence[RunSpec], out_dir: Path, evaluate: RunEvaluator = final_metrics,
            quiet: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    """Train (or reuse) every run of ``specs`` under ``out_dir/runs``, evaluate each, and write
    ``summary.json``, ``table.md`` and the comparison report into ``out_dir``. Returns the rows.

    ``jobs > 1`` trains that many runs at once, each in its own process with ``cpus // jobs``
    threads (``evaluate`` must then be a module-level function). Runs then share the machine:
    wall times, and so equal-time budgets, mean "one job's share of it"."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any] | None] = [_finished_row(out_dir / "runs" / spec.name, spec) for spec in specs]
    for index, spec in enumerate(specs, 1):
        if rows[index - 1] is not None:
            log.info("[%d/%d] %s: finished earlier, reused", index, len(specs), spec.name)
    pending = [index for index, row in enumerate(rows) if row is None]
    if jobs <= 1:
        for index in pending:
            spec = specs[index]
            log.info("[%d/%d] %s: %s, %s", index + 1, len(specs), spec.name, spec.config.strategy.name,
                     spec.limits.describe())
            rows[index] = train_and_evaluate(spec, out_dir, evaluate, quiet)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_set_threads, initargs=(threads,)) as pool:
            log.info("%d runs to train, %d at a time", len(pending), jobs)
            futures = {pool.submit(train_and_evaluate, specs[index], out_dir, evaluate, quiet): index
                       for index in pending}
            for done, future in enumerate(as_completed(futures), 1):
                index = futures[future]
                rows[index] = row = future.result()
                log.info("[%d/%d done] %s: %s, %s: %.0f s of training", done, len(pending), specs[index].name,
                         specs[index].config.strategy.name, specs[index].limits.describe(), row["wall_time_s"])
    finished = [row for row in rows if row is not None]
    write_summary(finished, out_dir)
    write_comparison_report(finished, out_dir)
    return finished


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)

def run_experiment(name: str, seeds: int = DEFAULT_SEEDS, out_dir: Path | None = None, scale: str = "paper",
                   overrides: Sequence[str] = (), evaluate: RunEvaluator = final_metrics,
                   quiet: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    experiment = EXPERIMENTS.get(name)
    specs = plan_runs(experiment, list(range(seeds)), scale, overrides)
    return run_set(specs, out_dir or Path("experiments") / f"{name}-{scale}", evaluate, quiet, jobs)

"""The paper's results re-run over seeds, measured and summarised (``distgan experiment NAME``).

An :class:`Experiment` is one result of the paper (a figure, or the literature's baselines): a
preset of :mod:`distgan.presets`, the *variants* that figure compares (``--set``-style overrides of
the preset: another split, another strategy), and one or more *budgets* that say how long each run
trains -- a number of rounds, a number of generator steps, a wall-clock time, or "until cfid reaches
a target". Every variant x budget runs once per seed, as an ordinary run folder.

One piece of code, :func:`run_set`, runs any list of runs and summarises them: it trains each run
(skipping runs a previous invocation finished, so an interrupted experiment continues), evaluates
the final generator with the evaluation metrics (:mod:`distgan.metrics`), and writes

* ``summary.json``: one row per run (variant, budget, seed, rounds, generator steps, wall time, metrics);
* ``table.md``: per variant and budget, the mean ± sample standard deviation over seeds;
* the comparison report of the runs side by side (:mod:`distgan.report`).

Two scales: ``paper`` (the lengths the paper's figures need; hours on a CPU) and ``quick``
(1,000-1,500 rounds for two parties, fewer for more: one to two minutes per run on a 2-core CPU,
where the default model already makes recognisable digits of all kinds; docs/RESULTS.md says which
scale each number comes from).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import resource
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distgan import run_folder
from distgan.checkpoint import atomic_write_text
from distgan.config import Config
from distgan.coordinator import Coordinator, RoundHook
from distgan.presets import PRESETS
from distgan.registry import Registry

# One line per run; not a child of the "distgan" logger, whose handlers write the current run's log.txt.
log = logging.getLogger("distgan_experiments")

SCALES = ("quick", "paper")
DEFAULT_SEEDS = 3


# -- budgets ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """How long one run trains, at one scale: exactly one of ``rounds``, ``generator_steps``,
    ``wall_time_s`` or ``cfid_target``; the last two stop at ``max_rounds`` at the latest."""

    rounds: int | None = None
    """A fixed number of rounds."""
    generator_steps: int | None = None
    """A fixed number of generator optimizer steps (rounds = steps / the strategy's G steps per round)."""
    wall_time_s: float | None = None
    """Train until the coordinator's training time (evaluation excluded) reaches this many seconds."""
    cfid_target: float | None = None
    """Train until the cfid measured every ``eval_every`` rounds is at most this."""
    max_rounds: int | None = None
    """Upper bound on rounds for the wall-time and cfid-target budgets."""
    eval_every: int | None = None
    """Rounds between cfid measurements during training (cfid-target budgets)."""

    def __post_init__(self) -> None:
        chosen = [name for name in ("rounds", "generator_steps", "wall_time_s", "cfid_target")
                  if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a budget sets exactly one of rounds, generator_steps, wall_time_s, cfid_target; "
                             f"got {chosen or 'none'}")
        if (self.wall_time_s is not None or self.cfid_target is not None) and self.max_rounds is None:
            raise ValueError("wall-time and cfid-target budgets need max_rounds (a run must end)")
        if self.cfid_target is not None and self.eval_every is None:
            raise ValueError("a cfid-target budget needs eval_every (rounds between cfid measurements)")

    def describe(self) -> str:
        if self.rounds is not None:
            return f"{self.rounds} rounds"
        if self.generator_steps is not None:
            return f"{self.generator_steps} generator steps"
        if self.wall_time_s is not None:
            return f"{self.wall_time_s:g} s of training (at most {self.max_rounds} rounds)"
        return (f"until cfid <= {self.cfid_target:g}, measured every {self.eval_every} rounds "
                f"(at most {self.max_rounds} rounds)")


@dataclass(frozen=True)
class Budget:
    name: str
    quick: Limits
    paper: Limits

    def at(self, scale: str) -> Limits:
        if scale not in SCALES:
            raise ValueError(f"scale {scale!r}: must be one of {', '.join(SCALES)}")
        return self.quick if scale == "quick" else self.paper


def generator_steps_per_round(config: Config) -> int:
    """G optimizer steps one round takes: round-robin steps once per party, every other strategy once
    per round (fedgan and local-only: each party's local G, averaged or not), ``local_steps`` each."""
    parties = 1 if config.strategy.name == "centralized" else config.data.parties
    per_round = parties if config.strategy.name == "round-robin" else 1
    if config.strategy.name == "round-robin" and config.train.parties_per_round is not None:
        per_round = config.train.parties_per_round
    return per_round * config.train.local_steps


# -- experiments ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    label: str
    """Short name, used in tables and run folder names."""
    overrides: tuple[str, ...] = ()
    """``section.field=value`` applied to the experiment's preset."""


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    claim: str
    """The paper's claim this experiment tests, in one sentence."""
    variants: tuple[Variant, ...]
    budgets: tuple[Budget, ...]
    time_to_target: bool = False
    """Add the table of wall time to the cfid target and speed-up vs the ``centralized`` variant."""


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(experiment: Experiment, summary: str) -> None:
    PRESETS.get(experiment.preset)  # an experiment always names an existing preset
    EXPERIMENTS.register(experiment.name, summary)(experiment)


def _rounds(quick: int, paper: int = 3000) -> Budget:
    return Budget("rounds", Limits(rounds=quick), Limits(rounds=paper))


register(Experiment("fig2", "fig2", "server-d trains one generator on two iid halves of MNIST (Fig. 2)",
                    (Variant("server-d iid/2"),), (_rounds(1500),)),
         "server-d on two iid halves of MNIST")
register(Experiment("fig3", "fig3", "avg-output generates every digit when each of 10 parties holds one (Fig. 3)",
                    (Variant("avg-output one-label/10"),), (_rounds(600),)),
         "avg-output, one digit per party, 10 parties")
register(Experiment("fig4-5", "fig4-5", "avg-output works for similar domains (6 | 8) but not for distant ones "
                                        "(4 | 7): 7 disappears (Figs. 4-5)",
                    (Variant("6|8", ("data.split=labels:6/8",)), Variant("4|7", ("data.split=labels:4/7",))),
                    (_rounds(1500),)),
         "avg-output on digits 6|8 vs 4|7")
register(Experiment("fig6", "fig6", "round-robin generates all ten digits when parties hold 0-4 and 5-9 (Fig. 6)",
                    (Variant("round-robin 0-4|5-9"),), (_rounds(1500),)),
         "round-robin on digits 0-4|5-9")
register(Experiment("fig7", "fig7", "round-robin generates both digits when parties hold 6 and 9 (Fig. 7)",
                    (Variant("round-robin 6|9"),), (_rounds(1500),)),
         "round-robin on digits 6|9")
register(Experiment("fig8-10", "fig8-10", "the generator loss of all three strategies trends down (Figs. 8-10)",
                    (Variant("server-d iid/2", ("strategy.name=server-d", "data.split=iid")),
                     Variant("avg-output 6|8", ("strategy.name=avg-output", "data.split=labels:6/8")),
                     Variant("round-robin 0-4|5-9")),
                    (_rounds(1000),)),
         "loss curves of the three strategies")
_TO_TARGET = Budget("to-cfid-target", Limits(cfid_target=60.0, max_rounds=3000, eval_every=100),
                    Limits(cfid_target=25.0, max_rounds=20000, eval_every=250))
register(Experiment("fig14", "fig14", "distributed training takes less time than the normal GAN (Fig. 14)",
                    # The normal GAN in one ordinary process; the parties of the others in worker processes.
                    (Variant("centralized", ("strategy.name=centralized", "runtime.workers=0")),
                     Variant("round-robin"),
                     Variant("avg-output", ("strategy.name=avg-output",)),
                     Variant("server-d", ("strategy.name=server-d",))),
                    (_TO_TARGET,), time_to_target=True),
         "wall time to a cfid target, each strategy (parties in worker processes) vs centralized")
register(Experiment("fig22", "fig22", "both strategies scale to 5 parties (Fig. 22)",
                    (Variant("server-d iid/5"),
                     Variant("round-robin 2 labels/5", ("strategy.name=round-robin",
                                                        "data.split=labels:0-1/2-3/4-5/6-7/8-9"))),
                    (_rounds(600),)),
         "5 parties: server-d on iid fifths, round-robin with two digits each")

BASELINE_STRATEGIES = ("centralized", "round-robin", "avg-output", "server-d", "md-gan", "fedgan", "local-only")
BASELINE_SPLITS = (("0-4|5-9", ("data.split=labels:0-4/5-9", "data.parties=2")),
                   ("dir0.3/5", ("data.split=dirichlet:0.3", "data.parties=5")))
register(Experiment(
    "baselines", "baselines",
    "the paper's strategies against the literature's baselines (centralized, local-only, FedGAN, MD-GAN)",
    tuple(Variant(f"{strategy} {split}", (f"strategy.name={strategy}", *overrides))
          for split, overrides in BASELINE_SPLITS for strategy in BASELINE_STRATEGIES),
    (Budget("equal-steps", Limits(generator_steps=1500), Limits(generator_steps=6000)),
     Budget("equal-time", Limits(wall_time_s=60.0, max_rounds=5000), Limits(wall_time_s=600.0, max_rounds=100000)))),
    "every strategy and baseline on 0-4|5-9 (2 parties) and dirichlet:0.3 (5 parties), equal steps and equal time")


# -- planning -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    experiment: str
    variant: str
    budget: str
    seed: int
    config: Config
    limits: Limits

    @property
    def name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{self.variant}--{self.budget}").strip("_")
        return f"{slug}--seed{self.seed}"


def plan_runs(experiment: Experiment, seeds: Sequence[int], scale: str,
              overrides: Sequence[str] = ()) -> list[RunSpec]:
    """Every run of ``experiment``: variant x budget x seed, each a full config. ``overrides``
    (``section.field=value``) apply to every run, after the variant's own."""
    specs = []
    for budget in experiment.budgets:
        limits = budget.at(scale)
        for variant in experiment.variants:
            for seed in seeds:
                config = PRESETS.get(experiment.preset)()
                config = config.with_overrides([*variant.overrides, *overrides, f"runtime.seed={seed}"])
                apply_limits(config, limits, scale)
                specs.append(RunSpec(experiment.name, variant.label, budget.name, seed, config, limits))
    return specs


def apply_limits(config: Config, limits: Limits, scale: str) -> None:
    """Set the run length (and, for short runs, the output intervals) from a budget."""
    if limits.rounds is not None:
        config.train.rounds = limits.rounds
    elif limits.generator_steps is not None:
        config.train.rounds = max(1, math.ceil(limits.generator_steps / generator_steps_per_round(config)))
    else:
        assert limits.max_rounds is not None
        config.train.rounds = limits.max_rounds
    if limits.cfid_target is not None:
        assert limits.eval_every is not None
        config.output.eval_every = limits.eval_every
    if scale == "quick":
        # Short runs: a handful of sample grids and progress lines, one checkpoint at the end.
        rounds = config.train.rounds
        config.output.sample_every = max(1, rounds // 4)
        config.output.checkpoint_every = rounds
        config.output.log_every = max(1, rounds // 10)
        if limits.cfid_target is None:
            config.output.eval_every = max(config.output.eval_every, rounds)


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
    """Round hook: note when the cfid measured during training first reaches the target, and stop."""

    target: float
    reached_round: int | None = None
    reached_elapsed_s: float | None = None
    history: list[tuple[int, float, float]] = field(default_factory=list)
    """(round, training seconds, cfid) of every measurement."""

    def __call__(self, coordinator: Coordinator, round_number: int, record: dict[str, Any]) -> None:
        cfid = _training_cfid(record)
        if cfid is None:
            return
        self.history.append((round_number, coordinator.elapsed_s, cfid))
        if cfid <= self.target and self.reached_round is None:
            self.reached_round, self.reached_elapsed_s = round_number, coordinator.elapsed_s
            coordinator.stop_reason = f"cfid {cfid:.1f} reached the target {self.target:g}"


def _training_cfid(record: dict[str, Any]) -> float | None:
    metrics = record.get("metrics") or {}
    for key in ("cfid", "metrics/cfid"):
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


# -- running and summarising ------------------------------------------------------------------------------
RunEvaluator = Callable[[Path], dict[str, Any]]
"""Final metrics of a finished run folder: cfid, coverage, party_coverage, tstr (None: not applicable)."""

METRIC_COLUMNS = ("cfid", "coverage", "party_coverage", "tstr")
TABLE_COLUMNS = ("cfid", "coverage", "party-coverage", "tstr", "wall time (s)")
RESULT_FILE = "experiment-row.json"


def final_metrics(run_dir: Path) -> dict[str, float | None]:
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


def table_metrics(values: dict[str, Any]) -> dict[str, float | None]:
    """cfid; coverage = digits covered (of 10); party_coverage = the mean over parties of the fraction of
    each party's labels the generator makes; tstr = held-out accuracy of a classifier trained on samples."""
    shares = [float(v) for k, v in values.items() if re.fullmatch(r"party-coverage/party-\d+", k)]

    def number(key: str) -> float | None:
        value = values.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    return {"cfid": number("cfid"), "coverage": number("coverage/classes"),
            "party_coverage": statistics.fmean(shares) if shares else None, "tstr": number("tstr/accuracy"),
            "party_coverage_min": min(shares) if shares else None,
            "missing_digits": values.get("coverage/missing")}


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


def train_and_evaluate(spec: RunSpec, out_dir: Path, evaluate: RunEvaluator = final_metrics,
                       quiet: bool = True) -> dict[str, Any]:
    """Train one run of an experiment from scratch under its limits, evaluate it, write its result file."""
    from distgan.training import check_new_run_dir, train

    run_dir = out_dir / "runs" / spec.name
    check_new_run_dir(run_dir, overwrite=True)  # an unfinished run from an earlier call starts over
    hooks: list[RoundHook] = []
    watch = TargetWatch(spec.limits.cfid_target) if spec.limits.cfid_target is not None else None
    if spec.limits.wall_time_s is not None:
        hooks.append(WallTimeLimit(spec.limits.wall_time_s))
    if watch is not None:
        hooks.append(watch)
    cpu_before, load_before = _cpu_seconds(), os.getloadavg()[0]
    coordinator = train(spec.config, run_dir, quiet=quiet, round_hooks=hooks)
    cpu_s = _cpu_seconds() - cpu_before
    row = _row(spec, run_dir, coordinator, watch, cpu_s)
    # The machine's 1-minute load average before and after: wall times mean little on a busy machine.
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    row.update(evaluate(run_dir))
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(row, indent=1))
    return row


def write_comparison_report(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path | None:
    """``report.html``: the evaluation module's run report with the runs side by side -- the first
    seed of every variant and budget (all seeds' numbers are in table.md and summary.json)."""
    from distgan.report import ReportError, write_report

    first_seed: dict[tuple[str, str], str] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        first_seed.setdefault((row["variant"], row["budget"]), row["run_dir"])
    try:  # run_dir is relative to the experiment folder (so the folder can move)
        return write_report([out_dir / d for d in first_seed.values()], out_dir / run_folder.REPORT)
    except (ReportError, OSError, ValueError) as error:
        log.warning("comparison report not written: %s", error)
        return None


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
        "workers": config.runtime.workers, "rounds": coordinator.round,
        "generator_steps": coordinator.round * generator_steps_per_round(config),
        "wall_time_s": coordinator.elapsed_s, "cpu_s": cpu_s,
        "bytes_up": sum(record["bytes_up"] for record in stats),
        "bytes_down": sum(record["bytes_down"] for record in stats),
        "g_loss_first_tenth": statistics.fmean(g_losses[:tenth]) if g_losses else None,
        "g_loss_last_tenth": statistics.fmean(g_losses[-tenth:]) if g_losses else None,
        "stop_reason": coordinator.stop_reason, "run_dir": f"runs/{spec.name}",
    }
    if watch is not None:
        row.update({"cfid_target": watch.target, "reached_target": watch.reached_round is not None,
                    "time_to_target_s": watch.reached_elapsed_s, "rounds_to_target": watch.reached_round,
                    "cfid_history": watch.history})
    return row


def write_summary(rows: Sequence[dict[str, Any]], out_dir: Path) -> None:
    experiment = EXPERIMENTS.get(rows[0]["experiment"]) if rows and rows[0]["experiment"] in EXPERIMENTS else None
    atomic_write_text(out_dir / "summary.json", json.dumps({"rows": list(rows)}, indent=1))
    text = markdown_table(rows)
    if experiment is not None and experiment.time_to_target:
        text += "\n" + time_to_target_table(rows)
    atomic_write_text(out_dir / "table.md", text)


# -- tables ---------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float | None], digits: int = 1) -> str:
    """``mean ± std`` (sample std over seeds) of the values that exist; ``n/a`` when none do."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "n/a"
    mean = statistics.fmean(present)
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    suffix = "" if len(present) == len(values) else f" ({len(present)}/{len(values)})"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}{suffix}"


def _markdown_row(cells: Sequence[str]) -> str:
    # A "|" inside a cell (variant labels such as "0-4|5-9") would split it: escape it.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["budget"]), []).append(row)
    return groups


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per variant and budget: mean ± std over seeds of cfid, coverage, party-coverage, tstr, wall time."""
    header = ["variant", "budget", "seeds", "rounds", "G steps", *TABLE_COLUMNS]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    for (variant, budget), group in _groups(rows).items():
        cells = [variant, budget, str(len(group)), mean_std([r["rounds"] for r in group], 0),
                 mean_std([r["generator_steps"] for r in group], 0),
                 mean_std([r.get("cfid") for r in group]), mean_std([r.get("coverage") for r in group]),
                 mean_std([r.get("party_coverage") for r in group], 2), mean_std([r.get("tstr") for r in group], 3),
                 mean_std([r["wall_time_s"] for r in group])]
        lines.append(_markdown_row(cells))
    return "\n".join(lines) + "\n"


def time_to_target_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fig. 14: wall time to the cfid target per strategy, and the speed-up vs centralized.
    Runs that never reached the target count as not reached (their time is not averaged in)."""
    header = ["strategy", "parties", "workers", "reached", "wall time to cfid target (s)", "speed-up vs centralized"]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    groups = _groups(rows)

    def mean_time(group: list[dict[str, Any]]) -> float | None:
        times = [r["time_to_target_s"] for r in group if r.get("reached_target")]
        return statistics.fmean(times) if times else None

    reference = next((mean_time(g) for g in groups.values() if g[0]["strategy"] == "centralized"), None)
    for group in groups.values():
        mean = mean_time(group)
        speedup = f"{reference / mean:.2f}x" if reference is not None and mean else "n/a"
        reached = sum(bool(r.get("reached_target")) for r in group)
        target = group[0].get("cfid_target")
        lines.append(_markdown_row([
            group[0]["strategy"], str(group[0]["parties"] if group[0]["strategy"] != "centralized" else 1),
            str(group[0]["workers"]), f"{reached}/{len(group)} (cfid <= {target:g})",
            mean_std([r["time_to_target_s"] if r.get("reached_target") else None for r in group]),
            speedup]))
    return "\n".join(lines) + "\n"


def run_experiment(name: str, seeds: int = DEFAULT_SEEDS, out_dir: Path | None = None, scale: str = "paper",
                   overrides: Sequence[str] = (), evaluate: RunEvaluator = final_metrics,
                   quiet: bool = True, jobs: int = 1) -> list[dict[str, Any]]:
    experiment = EXPERIMENTS.get(name)
    specs = plan_runs(experiment, list(range(seeds)), scale, overrides)
    return run_set(specs, out_dir or Path("experiments") / f"{name}-{scale}", evaluate, quiet, jobs)

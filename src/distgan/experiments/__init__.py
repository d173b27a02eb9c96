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
* ``table.md``: per variant and budget, the mean over seeds with its 95 % t-interval;
* the comparison report of the runs side by side (:mod:`distgan.report`).

Two scales: ``paper`` (our paper-scale lengths, 3,000 rounds per MNIST run: the paper states none;
hours on a CPU) and ``quick`` (600-1,500 rounds for two parties, fewer for more: one to four minutes per run on a 2-core CPU,
where the default model already makes recognisable digits of all kinds; docs/RESULTS.md says which
scale each number comes from). The ``-fashion`` twins of Figs. 2, 4-5 and 6 run the same splits on
Fashion-MNIST, for as many generator steps as distgan's setting takes in 2,000 rounds (quick) or the
``fashion`` preset's 7,000 (paper) (:func:`on_fashion`).

Each run's row and table.md carry cfid, fd-sharp, label coverage, party coverage, precision, recall,
tstr and wall time (:data:`COLUMNS`); a metric a run lacks (the sharp ones on a domain without a sharp
feature space, or in a summary written before they existed) is None in the row and ``n/a`` in the table.

Modules: ``definitions`` (Limits, Budget, Experiment, the registered experiments, run planning),
``runner`` (one run: stopping rules, training, evaluation, its row), ``pool`` (many runs, in parallel
with ``jobs``), ``tables`` (summary.json, table.md, the comparison report). Everything is importable
from ``distgan.experiments``.
"""

from distgan.experiments.definitions import (
    BASELINE_SPLITS,
    BASELINE_STRATEGIES,
    DEFAULT_SEEDS,
    EXPERIMENTS,
    FASHION_QUICK_ROUNDS,
    SCALES,
    Budget,
    Experiment,
    Limits,
    RunSpec,
    Variant,
    apply_limits,
    generator_steps_per_round,
    on_fashion,
    plan_runs,
    register,
    variant_labels,
)
from distgan.experiments.pool import run_experiment, run_set
from distgan.experiments.runner import (
    COPIED_METRICS,
    METRIC_COLUMNS,
    RESULT_FILE,
    RunEvaluator,
    TargetWatch,
    WallTimeLimit,
    final_metrics,
    table_metrics,
    train_and_evaluate,
)
from distgan.experiments.tables import (
    COLUMNS,
    TABLE_COLUMNS,
    Column,
    markdown_table,
    mean_interval,
    mean_std,
    time_to_target_table,
    write_comparison_report,
    write_summary,
)

__all__ = ["BASELINE_SPLITS", "BASELINE_STRATEGIES", "COLUMNS", "COPIED_METRICS", "DEFAULT_SEEDS", "EXPERIMENTS",
           "FASHION_QUICK_ROUNDS", "METRIC_COLUMNS", "RESULT_FILE", "SCALES", "TABLE_COLUMNS", "Budget", "Column",
           "Experiment", "Limits", "RunEvaluator", "RunSpec", "TargetWatch", "Variant", "WallTimeLimit", "apply_limits",
           "final_metrics", "generator_steps_per_round", "markdown_table", "mean_interval", "mean_std", "on_fashion",
           "plan_runs", "register", "run_experiment", "run_set", "table_metrics", "time_to_target_table",
           "train_and_evaluate", "variant_labels", "write_comparison_report", "write_summary"]

"""distgan experiment: re-run one of the paper's results over seeds and summarise it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, positive_int
from distgan.experiments import DEFAULT_SEEDS, TABLE_COLUMNS

DESCRIPTION = f"""\
Re-run one result of the paper (or the literature's baselines) over several seeds: every variant
the figure compares, each seed a normal run folder under OUT/runs/, then OUT/summary.json (one row
per run), OUT/table.md (per variant, the mean over seeds and its 95 % interval of each of
{", ".join(TABLE_COLUMNS)})
and the comparison report of the runs side by side.
Runs an earlier call finished are reused, so an interrupted experiment continues where it stopped.

--scale paper (default) trains our paper-scale length, 3,000 rounds per MNIST run (the paper states
no lengths; hours for a whole experiment on a CPU); --scale quick
trains 600-1,500 rounds on MNIST, 2,000 on Fashion-MNIST (one to four minutes a run): recognisable
images, not finished models.
Examples:
  distgan experiment --list
  distgan experiment fig6 --scale quick
  distgan experiment fig4-5 --seeds 5 --out experiments/fig4-5
  distgan experiment baselines --scale quick --jobs 2
  distgan experiment fig14 --set runtime.device=cuda
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="the experiment (--list shows them)")
    parser.add_argument("--seeds", type=positive_int, default=DEFAULT_SEEDS, metavar="N",
                        help=f"seeds 0..N-1 per variant (default {DEFAULT_SEEDS})")
    parser.add_argument("--scale", choices=("quick", "paper"), default="paper",
                        help="run lengths: paper scale (default; 3,000 rounds per MNIST run, our choice: the paper "
                             "states none) or quick (600-2,000 rounds)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="experiment folder (default experiments/NAME-SCALE)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field in every run, e.g. --set runtime.device=cuda (repeatable; "
                             "the run length, train.rounds, comes from the experiment's budget)")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="train N runs at once, each in its own process with cpus/N threads (default 1). "
                             "Runs then share the machine: wall times, and equal-time budgets, are per job")
    parser.add_argument("--only", action="append", default=[], metavar="TEXT",
                        help="run only the variants whose label (as --dry-run prints it) contains TEXT, e.g. "
                             "--only 'fedgan 0-4' (repeatable: any of them); table and report cover those runs")
    parser.add_argument("--budget", metavar="NAME",
                        help="run only this budget of an experiment that has several (e.g. equal-steps)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the runs the experiment would make; train nothing")
    parser.add_argument("--verbose", action="store_true", help="print each run's progress lines")


def run(args: argparse.Namespace) -> int:
    from distgan.cli.common import CommandError
    from distgan.experiments import EXPERIMENTS, plan_runs, run_set, variant_labels

    if args.list:
        width = max(len(name) for name in EXPERIMENTS.names())
        for name in EXPERIMENTS.names():
            print(f"{name:<{width}}  {EXPERIMENTS.summary(name)}")
        return 0
    if args.name is None:
        raise CommandError(f"name an experiment: {', '.join(EXPERIMENTS.names())}")
    experiment = EXPERIMENTS.get(args.name)
    specs = plan_runs(experiment, list(range(args.seeds)), args.scale, args.set, args.only)
    if not specs:  # only --only can leave none
        raise CommandError(f"--only {' '.join(map(repr, args.only))}: no variant of {experiment.name} matches; "
                           f"its variants: {', '.join(map(repr, variant_labels(experiment)))}")
    if args.budget is not None:
        budget_names = [budget.name for budget in experiment.budgets]
        if args.budget not in budget_names:
            raise CommandError(f"--budget {args.budget!r}: {experiment.name} has the budgets "
                               f"{', '.join(budget_names)}")
        specs = [spec for spec in specs if spec.budget == args.budget]
    out_dir = args.out or Path("experiments") / f"{experiment.name}-{args.scale}"
    if args.dry_run:
        for spec in specs:
            print(f"{spec.name} ({spec.variant}): {spec.config.strategy.name}, {spec.config.data.source} {spec.config.data.split}, "
                  f"{spec.config.data.parties} parties, {spec.limits.describe()}, train.rounds={spec.config.train.rounds}")
        print(f"{len(specs)} runs into {out_dir}", file=sys.stderr)
        return 0
    print(f"{experiment.name}: {experiment.claim}", file=sys.stderr)
    variants, budgets = len({spec.variant for spec in specs}), len({spec.budget for spec in specs})
    print(f"{len(specs)} runs ({variants} variants x {budgets} budgets x "
          f"{args.seeds} seeds) into {out_dir}", file=sys.stderr)
    _log_to_terminal()
    run_set(specs, out_dir, quiet=not args.verbose, jobs=args.jobs)
    print((out_dir / "table.md").read_text())
    print(f"experiment folder: {out_dir}")
    return 0


def _log_to_terminal() -> None:
    """One line per run on the terminal; each run's own progress lines go to its log.txt."""
    import logging

    logger = logging.getLogger("distgan_experiments")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


COMMANDS.register("experiment", "re-run a result of the paper over seeds; summary, table and report")(
    Command(configure, run, DESCRIPTION))

"""distgan train: run one training (or continue one with --resume)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distgan.api import check_registered_names
from distgan.cli.common import COMMANDS, Command, CommandError, non_negative_int, positive_int
from distgan.config import SHORT_NAMES, Config
from distgan.data import SOURCES
from distgan.data.partition import SPLITS
from distgan.models import MODELS
from distgan.presets import PRESETS
from distgan.strategies import STRATEGIES

DESCRIPTION = """\
Train one GAN across parties that keep their data. With no arguments: the default demo
(round-robin, 2 parties, bundled MNIST split 0-4 | 5-9, the paper's Figure 6).

Options are applied in order: --preset, then the named flags, then each --set.
Examples:
  distgan train
  distgan train --strategy avg-output --split one-label --parties 10
  distgan train --strategy server-d --split iid --set strategy.upload_fraction=0.05
  distgan train --set strategy.switch=epoch --rounds 200   # Alg. 3 as written: G travels, one epoch per party
  distgan train --strategy server-d --set strategy.fakes=party   # parties get G's weights, make their own fakes
  distgan train --data folder:/data/celeba --model dcgan --split iid
  distgan train --resume runs/00003-round-robin-2p
"""

# flag -> (section, field): the flags that map one-to-one onto config fields (the Python API's keywords too).
FLAG_FIELDS = SHORT_NAMES


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that describe a run's config (shared with commands that start runs)."""
    group = parser.add_argument_group("run configuration")
    group.add_argument("--preset", help=f"start from a named preset ({', '.join(PRESETS.names())}); default: default")
    group.add_argument("--strategy", help=f"training strategy: {', '.join(STRATEGIES.names())}")
    group.add_argument("--data", metavar="SRC", help=f"data source NAME[:ARG]: {', '.join(SOURCES.names())}")
    group.add_argument("--split", metavar="SPEC",
                       help=f"partition across parties: {', '.join(SPLITS.names())} (e.g. labels:0-4/5-9)")
    group.add_argument("--parties", type=positive_int, metavar="N", help="number of parties")
    group.add_argument("--model", help=f"model family: {', '.join(MODELS.names())}")
    group.add_argument("--rounds", type=positive_int, metavar="N", help="rounds to train, the same unit on every runtime (train, flower local/app/simulate): "
                            "each round is --local-steps D and G steps per party message, so G takes "
                            "rounds x local-steps steps (x parties for round-robin); with "
                            "strategy.switch=epoch a round is one pass over every party's data")
    group.add_argument("--local-steps", type=positive_int, metavar="N",
                       help="D and G steps per party message (1 = the paper's per-batch algorithm; more makes "
                            "avg-output, md-gan and round-robin train on stale feedback, a different "
                            "algorithm that collapses at many steps)")
    group.add_argument("--batch-size", type=positive_int, metavar="N", help="samples per step")
    group.add_argument("--parties-per-round", type=positive_int, metavar="K",
                       help="sample K parties each round (default: all)")
    group.add_argument("--seed", type=non_negative_int, metavar="N", help="seed of every random stream")
    group.add_argument("--workers", type=non_negative_int, metavar="N",
                       help="0: parties in this process; N: in N worker processes")
    group.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    group.add_argument("--dp-epsilon", type=float, metavar="EPS", help="differential privacy: target epsilon per party")
    group.add_argument("--dp-delta", type=float, metavar="DELTA", help="differential privacy: delta (default 1e-5 or 1/n)")
    group.add_argument("--max-grad-norm", type=float, metavar="C", help="differential privacy: per-sample clip bound")
    group.add_argument("--noise-multiplier", type=float, metavar="SIGMA",
                       help="differential privacy: explicit noise multiplier")
    group.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override any config field, e.g. --set train.lr_g=1e-3 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    config = PRESETS.get(args.preset or "default")()
    assignments = [f"{section}.{name}={getattr(args, flag)}" for flag, (section, name) in FLAG_FIELDS.items()
                   if getattr(args, flag, None) is not None]
    config = config.with_overrides(assignments + list(args.set))
    check_registered_names(config)
    return config


def explicit_options(args: argparse.Namespace) -> bool:
    return bool(args.preset or args.set or any(getattr(args, f, None) is not None for f in FLAG_FIELDS))


def configure(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", type=Path, metavar="RUN_DIR",
                     help="the run folder itself (default: runs/<NNNNN>-<strategy>-<n>p)")
    out.add_argument("--overwrite", action="store_true", help="replace RUN_DIR if it exists and is not empty")
    out.add_argument("--resume", type=Path, metavar="RUN_DIR",
                     help="continue a run from its last checkpoint (--rounds may raise its length)")
    out.add_argument("--dry-run", action="store_true",
                     help="check the config, load and split the data, build the models, print the plan; write nothing")
    out.add_argument("--quiet", action="store_true", help="no progress lines on the terminal (log.txt keeps them)")


def run(args: argparse.Namespace) -> int:

    if args.dry_run:
        return _dry_run(resolve_run(args, lambda: config_from_args(args), check_folder=False).config)
    run = resolve_run(args, lambda: config_from_args(args))
    if run.resume:
        from distgan import run_folder

        run_folder.write_config(run.run_dir, run.config)  # --rounds may have extended it
    try:
        _train(run.config, run.run_dir, resume=run.resume, quiet=args.quiet)
    finally:
        if run.created and run.run_dir.is_dir() and not any(run.run_dir.iterdir()):
            run.run_dir.rmdir()  # setup failed and left nothing: leave no empty run folder either
    print(f"run folder: {run.run_dir}")
    return 0


@dataclass(frozen=True)
class ResolvedRun:
    config: Config
    run_dir: Path
    resume: bool
    created: bool
    """The folder did not exist before (a failed set-up removes it again)."""


def resolve_run(args: argparse.Namespace, new_config: Callable[[], Config], check_folder: bool = True) -> ResolvedRun:
    """The run a command trains, one rule for every command that starts or continues one (``distgan
    train``, ``distgan flower local|simulate``): with ``--resume RUN_DIR`` that run, with its own
    config (:func:`resumed_config`); else a new run with ``new_config()`` in ``--out`` (default
    ``runs/<NNNNN>-...``), which must be empty unless ``--overwrite`` (not checked with ``check_folder=False``)."""
    from distgan import training

    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise CommandError("--out and --resume name different folders; --resume continues in its own folder")
        return ResolvedRun(resumed_config(args, args.resume), args.resume, True, False)
    config = new_config()
    run_dir = args.out or training.default_run_dir(config)
    created = not run_dir.exists()
    if check_folder:
        training.check_new_run_dir(run_dir, args.overwrite)
    return ResolvedRun(config, run_dir, False, created)


def resumed_config(args: argparse.Namespace, run_dir: Path) -> Config:
    """The config of the run in ``run_dir``: ``--rounds`` may extend it; any other option given that
    differs from it is refused, naming each difference (a preset's defaults count only with --preset)."""
    from distgan import training

    config = training.load_run_config(run_dir)
    if explicit_options(args):
        asked = config_from_args(args)
        rounds = asked.train.rounds if args.rounds is not None else config.train.rounds
        asked.train.rounds = config.train.rounds
        differences = training.config_differences(config, asked)
        if args.preset is None:  # only named flags and --set count; the preset default does not
            flagged = {f"{s}.{n}" for f, (s, n) in FLAG_FIELDS.items() if getattr(args, f, None) is not None}
            flagged |= {a.split("=", 1)[0] for a in args.set}
            differences = [d for d in differences if d.split(":", 1)[0] in flagged]
        if differences:
            raise CommandError(f"{run_dir} was run with a different config: " + "; ".join(differences))
        config.train.rounds = rounds
    return config


def _train(config: Config, run_dir: Path, resume: bool, quiet: bool) -> None:
    """Train, turning a failed party or a failed write into one line that says what to do next."""
    from distgan import run_folder, training
    from distgan.parties import PartyFailedError

    try:
        training.train(config, run_dir, resume=resume, quiet=quiet)
    except PartyFailedError as error:
        checkpointed = run_folder.checkpoint_dir(run_dir).is_dir()
        hint = f"; --resume {run_dir} continues from the last checkpoint" if checkpointed else ""
        raise CommandError(f"the run stopped: {error}{hint}") from None
    except OSError as error:
        if not run_folder.checkpoint_dir(run_dir).is_dir():
            raise
        raise CommandError(f"{run_dir}: cannot write ({error}); the last complete checkpoint is kept: free space "
                           f"or fix the folder, then --resume {run_dir}") from None


def _dry_run(config: Config) -> int:
    from distgan.assembly import make_factory, plan_data

    plan = plan_data(config)
    factory = make_factory(config, plan)
    factory.generator(), factory.discriminator()
    print(config.to_json())
    print(f"data: {plan.data.name}, images {plan.data.shape}", file=sys.stderr)
    for line in plan.shares.describe(plan.data):
        print(line, file=sys.stderr)
    if plan.test_split is not None:
        print(f"test split (no party holds it): {plan.test_split.size} samples, {plan.test_split.how}", file=sys.stderr)
    from distgan.metrics.domains import run_domain

    print(f"evaluation domain: {run_domain(config).note}", file=sys.stderr)
    print("dry run: config, data, split and models are valid; nothing written", file=sys.stderr)
    return 0


COMMANDS.register("train", "train a GAN across parties (no arguments: the default demo)")(
    Command(configure, run, DESCRIPTION))

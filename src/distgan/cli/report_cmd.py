"""distgan report: the HTML report of one run, or several runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, CommandError

DESCRIPTION = """\
Write a self-contained HTML report (images embedded, so it can be mailed): metrics table,
per-party label breakdown of the samples, sample grids over time, metric curves over rounds and
wall time, losses, bytes per round, config. One run: RUN_DIR/report.html by default.
Examples:
  distgan report runs/00003-round-robin-2p
  distgan report runs/00003-round-robin-2p runs/00004-avg-output-2p --out compare.html
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="run folders made by distgan train")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.html",
                        help="where to write (default for one run: RUN_DIR/report.html; required for several)")


def run(args: argparse.Namespace) -> int:
    from distgan.report import write_report

    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise CommandError(f"--out {args.out}: must end in .html")
    if len(args.run_dirs) > 1 and args.out is None:
        raise CommandError("comparing several runs needs --out FILE.html")
    print(f"wrote {write_report(args.run_dirs, args.out)}")
    return 0


COMMANDS.register("report", "write the HTML report of a run, or compare several runs side by side")(
    Command(configure, run, DESCRIPTION))

"""The default demo, three seeds: does `distgan train` with no arguments make good digits in minutes?

Runs ``distgan train --seed S`` (everything else default: round-robin, 2 parties, digits 0-4 | 5-9
of the bundled MNIST) as a user would, one seed after another, and prints a table: the command's
wall time (start-up, data, training, metrics, report), the training time alone, the final cfid
and the digits covered, then the mean. The goal (issue 3): cfid <= 60 and 10/10 digits in
<= 5 minutes on a 2-core CPU. Note the load average printed with it: the CPU may be shared.

  python benchmarks/default_run.py [--seeds 0 1 2] [--keep DIR] [-- extra train options]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distgan.metrics import read_metrics


def run_seed(seed: int, root: Path, extra: list[str]) -> dict[str, object]:
    run_dir = root / f"seed-{seed}"
    command = [sys.executable, "-c", "import sys; from distgan.cli import main; sys.exit(main())", "train", "--seed", str(seed), "--out", str(run_dir),
               "--overwrite", "--quiet", *extra]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: distgan train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    final = read_metrics(run_dir)[-1]
    metrics = final["metrics"]
    return {"seed": seed, "wall_s": wall, "train_s": final["elapsed_s"], "cfid": metrics["cfid"],
            "classes": metrics["coverage/classes"], "missing": metrics["coverage/missing"],
            "load": (load_before + os.getloadavg()[0]) / 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("extra", nargs="*", help="options passed on to distgan train (after --)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="distgan-default-"))
    print(f"runs in {root}; {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    header = f"{'seed':>4}  {'wall (min)':>10}  {'train (min)':>11}  {'cfid':>6}  {'digits':>6}  {'load':>5}  missing"
    for seed in args.seeds:
        rows.append(run_seed(seed, root, args.extra))
        row = rows[-1]
        print(f"done: seed {seed}, {row['wall_s'] / 60:.2f} min, cfid {row['cfid']:.1f}, "
              f"{row['classes']}/10 digits", flush=True)
    print()
    print(header)
    for row in rows:
        print(f"{row['seed']:>4}  {row['wall_s'] / 60:>10.2f}  {row['train_s'] / 60:>11.2f}  {row['cfid']:>6.1f}  "
              f"{row['classes']:>4}/10  {row['load']:>5.1f}  {row['missing']}")
    mean = {key: statistics.fmean(float(r[key]) for r in rows) for key in ("wall_s", "train_s", "cfid", "classes",
                                                                          "load")}
    print(f"{'mean':>4}  {mean['wall_s'] / 60:>10.2f}  {mean['train_s'] / 60:>11.2f}  {mean['cfid']:>6.1f}  "
          f"{mean['classes']:>4.1f}/10  {mean['load']:>5.1f}")


if __name__ == "__main__":
    main()

"""The default demo, three seeds: does `distgan train` with no arguments earn its score?

Runs ``distgan train --seed S`` (everything else default, or ``--preset NAME``) as a user would, one
seed after another, and prints a table: the command's wall time (start-up, data, training, metrics,
report), the training time alone, every Fréchet metric (cfid, fd-sharp), precision and recall, and
the classes covered; then the mean, and the same metrics for the **noisy-real reference**: 2,000 real
images of the domain's train split with Gaussian noise sigma 0.3 added (issue 12: a default run must
score no worse than it on every Fréchet metric, with every class covered). The load average is
printed with it: the CPU may be shared (wall times then say little; the metrics do not depend on it).

  python benchmarks/default_run.py [--seeds 0 1 2] [--preset fashion] [--keep DIR] [-- extra train options]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distgan.metrics import read_metrics
from distgan.metrics.calibration import condition_named, score_condition
from distgan.metrics.sharp import DOMAINS

REFERENCE = "real + noise σ 0.3"
QUALITY = ["cfid", "fd-sharp", "precision", "recall", "coverage/classes"]


def run_seed(seed: int, root: Path, extra: list[str]) -> dict[str, Any]:
    run_dir = root / f"seed-{seed}"
    command = [sys.executable, "-c", "import sys; from distgan.cli import main; sys.exit(main())", "train",
               "--seed", str(seed), "--out", str(run_dir), "--overwrite", "--quiet", *extra]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: distgan train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = read_metrics(run_dir)[-1]["metrics"]
    source = json.loads((run_dir / "config.json").read_text())["data"]["source"]
    return {"seed": seed, "wall_s": wall, "train_s": read_metrics(run_dir)[-1]["elapsed_s"], "source": source,
            **{key: metrics.get(key) for key in QUALITY}, "missing": metrics.get("coverage/missing"),
            "load": (load_before + os.getloadavg()[0]) / 2}


def cell(value: object, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", default=None, help="run this preset (e.g. fashion) instead of the default")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    parser.add_argument("extra", nargs="*", help="options passed on to distgan train (after --)")
    args = parser.parse_args()
    extra = (["--preset", args.preset] if args.preset else []) + args.extra
    root = args.keep or Path(tempfile.mkdtemp(prefix="distgan-default-"))
    print(f"runs in {root}; {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, root, extra))
        row = rows[-1]
        print(f"done: seed {seed}, {row['wall_s'] / 60:.2f} min, cfid {cell(row['cfid'], '.1f')}, "
              f"fd-sharp {cell(row['fd-sharp'], '.1f')}, {row['coverage/classes']}/10 classes", flush=True)
    domain = str(rows[0]["source"]).split(":", 1)[0]
    reference: dict[str, object] = {}
    if domain in DOMAINS:
        _, reference = score_condition(domain, condition_named(REFERENCE), [k.split("/")[0] for k in QUALITY])
    print()
    print("| seed | wall (min) | train (min) | cfid | fd-sharp | precision | recall | classes | load | missing |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['seed']} | {row['wall_s'] / 60:.2f} | {row['train_s'] / 60:.2f} | {cell(row['cfid'], '.1f')} | "
              f"{cell(row['fd-sharp'], '.1f')} | {cell(row['precision'], '.3f')} | {cell(row['recall'], '.3f')} | "
              f"{row['coverage/classes']}/10 | {row['load']:.1f} | {row['missing']} |")

    def mean(key: str) -> float:
        return statistics.fmean(float(r[key]) for r in rows if r[key] is not None)  # type: ignore[arg-type]

    print(f"| mean | {mean('wall_s') / 60:.2f} | {mean('train_s') / 60:.2f} | {mean('cfid'):.1f} | "
          f"{mean('fd-sharp'):.1f} | {mean('precision'):.3f} | {mean('recall'):.3f} | "
          f"{mean('coverage/classes'):.1f}/10 | {mean('load'):.1f} | |")
    if reference:
        print(f"| {domain} {REFERENCE} | | | {cell(reference.get('cfid'), '.1f')} | "
              f"{cell(reference.get('fd-sharp'), '.1f')} | {cell(reference.get('precision'), '.3f')} | "
              f"{cell(reference.get('recall'), '.3f')} | {reference.get('coverage/classes')}/10 | | |")


if __name__ == "__main__":
    main()

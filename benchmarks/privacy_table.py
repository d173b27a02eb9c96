"""The privacy/utility table of docs/PRIVACY.md: for each strategy and target epsilon, train, audit, report.

Each cell is ``distgan train`` (default model and settings, ``labels:0-4/5-9``, ``data.limit=4000`` so
the audit has 1,000 real non-members) followed by ``distgan audit``; cells run in parallel processes
of one thread each (``--jobs``). Prints one markdown row per cell: epsilon spent (worst party), cfid,
digits covered, tstr accuracy, the audit's worst membership AUCs and memorization ratio, and the
training time.

  python benchmarks/privacy_table.py --strategies round-robin avg-output --epsilons 1 10 inf \\
      --rounds 3000 --jobs 2 --keep runs/privacy
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distgan.metrics import read_metrics
from distgan.plots import read_jsonl
from distgan.report import AUDIT_FILE

CLI = "import sys; from distgan.cli import main; sys.exit(main())"


def run_cell(strategy: str, epsilon: str, rounds: int, root: Path, extra: list[str]) -> dict[str, Any]:
    run_dir = root / f"{strategy}-eps{epsilon}"
    train = [sys.executable, "-c", CLI, "train", "--strategy", strategy, "--rounds", str(rounds),
             "--set", "data.limit=4000", "--out", str(run_dir), "--overwrite", "--quiet", *extra]
    if epsilon != "inf":
        train += ["--dp-epsilon", epsilon]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in (train, [sys.executable, "-c", CLI, "audit", str(run_dir)]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{run_dir.name}: {' '.join(command[3:5])} failed ({done.returncode}):\n"
                             f"{done.stderr[-3000:]}")
    metrics = read_metrics(run_dir)[-1]
    stats = read_jsonl(run_dir / "stats.jsonl")[-1]
    audit = json.loads((run_dir / AUDIT_FILE).read_text())
    epsilons = [party.get("epsilon", 0.0) for party in stats["parties"].values()]

    def per_party(field: str) -> list[float]:
        return [r[field] for r in audit["parties"].values() if r[field] is not None]

    values = metrics["metrics"]
    return {"strategy": strategy, "epsilon": epsilon, "spent": max(epsilons) if epsilon != "inf" else None,
            "rounds": stats["round"], "cfid": values.get("cfid"), "classes": values.get("coverage/classes"),
            "tstr": values.get("tstr/accuracy"), "auc_g": max(per_party("membership_auc_distance")),
            "auc_d": max(per_party("membership_auc_discriminator"), default=None),
            "ratio": min(per_party("memorization_ratio"), default=None), "train_s": stats["elapsed_s"]}


def cell(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["round-robin", "avg-output"])
    parser.add_argument("--epsilons", nargs="+", default=["1", "10", "inf"])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=2, help="cells trained at once (one thread each)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("extra", nargs="*", help="options passed on to distgan train (after --)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="distgan-privacy-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs in {root}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    cells = [(s, e) for s in args.strategies for e in args.epsilons]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(c[0], c[1], args.rounds, root, args.extra), cells))
    print("| strategy | target ε | ε spent (max party) | rounds | cfid ↓ | digits ↑ | tstr ↑ "
          "| audit AUC, G samples | audit AUC, party D | memorization ratio | train time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['strategy']} | {row['epsilon']} | {cell(row['spent'], 2)} | {row['rounds']} | "
              f"{cell(row['cfid'], 1)} | {row['classes']} | {cell(row['tstr'])} | {cell(row['auc_g'])} | "
              f"{cell(row['auc_d'])} | {cell(row['ratio'])} | {cell(row['train_s'], 0)} |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""The default-run tuning study (docs/TUNING.md): short runs of the default setting with overrides.

Each trial trains round-robin, 2 parties, digits 0-4 | 5-9 of the bundled MNIST, measures the cheap
metrics every --eval-every rounds, and prints one line per measurement and a summary table:
training seconds (wall, without evaluation), process CPU seconds, cfid, classes covered.

  python benchmarks/tuning_sweep.py --rounds 1000 --eval-every 250 \\
      --trial base: --trial lr1e-3:train.lr_g=1e-3,train.lr_d=1e-3
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from distgan import training
from distgan.config import Config
from distgan.metrics import read_metrics


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


REPORTED = {"cfid": "cfid", "fd-sharp": "fd-sharp", "precision": "precision", "recall": "recall",
            "classes": "coverage/classes", "missing": "coverage/missing"}
"""Column -> metrics.jsonl key of what each measurement prints (the sharp metric beside cfid, issue 12)."""


def _shown(value: object) -> str:
    return f"{value:7.3g}" if isinstance(value, float) else str(value)


def run_trial(name: str, overrides: list[str], rounds: int, eval_every: int, root: Path) -> list[dict]:
    config = Config().with_overrides([f"train.rounds={rounds}", f"output.eval_every={eval_every}",
                                      f"output.sample_every={rounds}", f"output.checkpoint_every={rounds}",
                                      f"output.log_every={rounds}", *overrides])
    run_dir = root / name
    training.check_new_run_dir(run_dir, overwrite=True)
    started_cpu, started = cpu_seconds(), time.perf_counter()
    training.train(config, run_dir, quiet=True)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
    rows = []
    for line in read_metrics(run_dir):
        metrics = line["metrics"]
        row = {"trial": name, "round": line["round"], "train_s": line["elapsed_s"],
               **{key: metrics.get(metric) for key, metric in REPORTED.items()}}
        rows.append(row)
        shown = "  ".join(f"{key} {_shown(row[key])}" for key in REPORTED)
        print(f"{name:<24} round {line['round']:>5}  train {line['elapsed_s']:7.1f} s  {shown}", flush=True)
    print(f"{name:<24} total wall {wall:.0f} s (with evaluation), process CPU {cpu:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--trial", action="append", required=True, metavar="NAME:a.b=v,c.d=w")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--setup", type=Path, default=None,
                        help="a Python file run first (e.g. registering experimental models in MODELS)")
    args = parser.parse_args()
    if args.setup is not None:
        exec(compile(args.setup.read_text(), str(args.setup), "exec"), {"__name__": "tuning_setup"})  # noqa: S102
    root = args.keep or Path(tempfile.mkdtemp(prefix="distgan-tuning-"))
    print(f"load average at start: {os.getloadavg()[0]:.1f}; runs in {root}", flush=True)
    for trial in args.trial:
        name, _, text = trial.partition(":")
        run_trial(name, [t for t in text.split(",") if t], args.rounds, args.eval_every, root)


if __name__ == "__main__":
    main()

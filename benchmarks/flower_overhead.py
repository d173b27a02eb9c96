"""What Flower costs per round: in-process vs Flower simulation vs Flower deployment (loopback,
TLS + node auth), at 2 and 4 parties, at Flower deployment's default coarse rounds.

Per engine and party count it trains the same config for a few rounds and reads ``stats.jsonl``:

* ``round s``      mean wall time of a round (first round included: no engine gets a warm-up)
* ``overhead s``   message overhead per round as FlowerParties records it: for each request batch,
                   wall time minus the longest time a party spent in ``Party.handle``
* ``share``        overhead / round time (the issue asks <= 10% at deployment defaults)
* ``vs in-proc``   (round time - in-process round time) / round time: the whole price of the engine
* ``startup s``    wall time of the whole run minus its rounds (processes, Ray, greetings, checkpoint)

Run: ``python benchmarks/flower_overhead.py [--parties 2 4] [--rounds 2] [--strategy round-robin]
[--engines in-process simulation deployment] [--local-steps N]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import distgan.runtime.flower  # noqa: F401  (Flower's environment before flwr is imported)
from distgan import training
from distgan.assembly import plan_data
from distgan.config import Config, DataConfig, StrategyConfig, TrainConfig
from distgan.runtime.flower.coarse import deployment_local_steps
from distgan.runtime.flower.local import run_local
from distgan.runtime.flower.simulation import RayResources, simulate


def bench_config(parties: int, rounds: int, strategy: str, local_steps: int | None) -> Config:
    config = Config(data=DataConfig(source="fake:n=4000", split="iid", parties=parties),
                    train=TrainConfig(rounds=rounds), strategy=StrategyConfig(name=strategy))
    steps = local_steps or deployment_local_steps(plan_data(config).data.shape, config.train.batch_size)
    return config.with_overrides([f"train.local_steps={steps}", "output.sample_every=1000",
                                  "output.checkpoint_every=1000", "output.log_every=1"])


def run_engine(engine: str, config: Config, run_dir: Path) -> float:
    started = time.perf_counter()
    if engine == "in-process":
        run_dir.mkdir(parents=True)
        training.train(config, run_dir, quiet=True)
    elif engine == "simulation":
        simulate(config, run_dir, RayResources(total_cpus=os.cpu_count()))
    else:
        run_local(config, run_dir, echo=None)
    return time.perf_counter() - started


def summarize(engine: str, parties: int, config: Config, run_dir: Path, total_s: float,
              baseline: float | None) -> dict[str, object]:
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    round_s = sum(r["seconds"] for r in records) / len(records)
    overhead = sum(r.get("overhead_s", 0.0) for r in records) / len(records)
    return {"engine": engine, "parties": parties, "local steps": config.train.local_steps,
            "MB/round": round(sum(r["bytes_down"] + r["bytes_up"] for r in records) / len(records) / 1e6, 1),
            "round s": round(round_s, 2), "overhead s": round(overhead, 2),
            "share": f"{overhead / round_s:.0%}" if engine != "in-process" else "-",
            "vs in-proc": f"{(round_s - baseline) / round_s:.0%}" if baseline is not None else "-",
            "startup s": round(total_s - sum(r["seconds"] for r in records), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--strategy", default="round-robin")
    parser.add_argument("--local-steps", type=int, default=None,
                        help="default: Flower deployment's default for the data (coarse rounds)")
    parser.add_argument("--engines", nargs="+", default=["in-process", "simulation", "deployment"],
                        choices=["in-process", "simulation", "deployment"])
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        for parties in args.parties:
            config = bench_config(parties, args.rounds, args.strategy, args.local_steps)
            baseline = None
            for engine in args.engines:
                run_dir = root / f"{engine}-{parties}p"
                total = run_engine(engine, config, run_dir)
                row = summarize(engine, parties, config, run_dir, total, baseline)
                if engine == "in-process":
                    baseline = float(row["round s"])  # type: ignore[arg-type]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")
    print(f"\n{args.strategy}, {args.rounds} rounds, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())

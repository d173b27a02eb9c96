"""What Flower costs: in-process vs Flower simulation vs Flower deployment (loopback, TLS + node
auth) with resident parties, and with Flower's ClientApp process per message, per message and per round.

Per engine and party count it trains the same config for a few rounds and reads ``stats.jsonl``:

* ``round s``      mean wall time of a round (first round included: no engine gets a warm-up)
* ``msg s``        mean wall time of one request exchange (push the requests, wait for every
                   reply): the per-message round trip, party compute included
* ``overhead s``   message overhead per round as FlowerParties records it: for each exchange,
                   wall time minus the longest time a party spent in ``Party.handle``
* ``share``        overhead / round time (the issue asks <= 10% at the default round size)
* ``vs in-proc``   (round time - in-process round time) / round time: the whole price of the engine
* ``startup s``    wall time of the whole run minus its rounds (processes, Ray, greetings, checkpoint)
* ``in/answer/reply/ctx s`` (resident deployment engines) where a message's time goes inside the party
                   process, mean per task from its ``DISTGAN_RESIDENT_LOG=debug`` lines: pulling the
                   task and its message (objects included), ``Party.handle``, pushing the reply, pushing
                   the Context
* ``outside s``    ``msg s`` minus those four: the time a message spends outside the party process
                   (ServerApp push and pull, SuperLink, the SuperNode's waits and its hand-over of the task)
* ``load``         the 1-minute load average when that engine's run ended: this machine is shared,
                   and every wall time above is an upper bound when it exceeds the core count

Engines: ``in-process`` (``distgan train``), ``simulation`` (Ray), ``deployment`` (``distgan flower
local``: SuperLink + one SuperNode per party, resident party processes), ``deployment-poll`` (the
same with ``DISTGAN_SUPERNODE_POLL`` = ``--supernode-poll``: the SuperNode's hard-coded 3 s / 0.5 s
waits shortened, a run-time patch of Flower), ``per-message`` (``--clientapp per-message``: Flower
starts a ``flwr-clientapp`` per message).

Run: ``python benchmarks/flower_overhead.py [--parties 2] [--rounds 10] [--strategy round-robin]
[--engines ...] [--local-steps N] [--set strategy.switch=epoch]``; prints a markdown table. The default round size is the
config's (``train.local_steps``); weights-travelling strategies carry a whole epoch per message.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import distgan.runtime.flower  # noqa: F401  (Flower's environment before flwr is imported)
from distgan import training
from distgan.config import Config, DataConfig, StrategyConfig, TrainConfig
from distgan.runtime.flower.local import run_local
from distgan.runtime.flower.resident import (
    RESIDENT_LOG_ENVIRONMENT,
    SUPERNODE_POLL_ENVIRONMENT,
    TASK_TIMES_LOG,
)
from distgan.runtime.flower.simulation import RayResources, simulate

ENGINES = ["in-process", "simulation", "deployment", "deployment-poll", "per-message"]


def bench_config(parties: int, rounds: int, strategy: str, local_steps: int | None,
                 assignments: list[str]) -> Config:
    config = Config(data=DataConfig(source="fake:n=4000", split="iid", parties=parties),
                    train=TrainConfig(rounds=rounds), strategy=StrategyConfig(name=strategy))
    overrides = ["output.sample_every=100000", "output.checkpoint_every=100000", "output.log_every=1",
                 "output.eval_every=100000"]
    if local_steps is not None:
        overrides.append(f"train.local_steps={local_steps}")
    return config.with_overrides(overrides + assignments)


def run_engine(engine: str, config: Config, run_dir: Path, supernode_poll: float) -> float:
    os.environ.pop(SUPERNODE_POLL_ENVIRONMENT, None)
    os.environ[RESIDENT_LOG_ENVIRONMENT] = "debug"  # each resident task logs where its time went
    if engine == "deployment-poll":
        os.environ[SUPERNODE_POLL_ENVIRONMENT] = str(supernode_poll)
    started = time.perf_counter()
    if engine == "in-process":
        run_dir.mkdir(parents=True)
        training.train(config, run_dir, quiet=True)
    elif engine == "simulation":
        simulate(config, run_dir, RayResources(total_cpus=os.cpu_count()))
    else:
        run_local(config, run_dir, echo=None, resident=engine != "per-message")
    return time.perf_counter() - started


# The resident party's own debug line, its "%s" the four stage times.
TASK_TIMES = re.compile(re.escape(TASK_TIMES_LOG).replace(re.escape("%s"), " ".join([r"([0-9.]+)"] * 4)))


def task_breakdown(run_dir: Path) -> list[float] | None:
    """Mean seconds per resident task in (input, answer, reply, context), from the SuperNodes' logs;
    None where no resident party logged (other engines, or Flower's process per message)."""
    tasks = [[float(value) for value in match.groups()]
             for log in sorted((run_dir / "flower" / "logs").glob("*.log"))
             for match in TASK_TIMES.finditer(log.read_text(errors="replace"))]
    return [statistics.fmean(stage) for stage in zip(*tasks, strict=True)] if tasks else None


def summarize(engine: str, parties: int, variant: str, config: Config, run_dir: Path, total_s: float,
              baseline: float | None) -> dict[str, object]:
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    round_s = sum(r["seconds"] for r in records) / len(records)
    overhead = sum(r.get("overhead_s", 0.0) for r in records) / len(records)
    exchanges = sum(r.get("exchanges", 0.0) for r in records)
    exchange_s = sum(r.get("overhead_s", 0.0) + r.get("party_compute_s", 0.0) for r in records)
    remote = engine != "in-process"
    message_s = exchange_s / exchanges if remote and exchanges else None
    stages = task_breakdown(run_dir)
    return {"engine": engine, "parties": parties, "variant": variant or "-", "local steps": config.train.local_steps,
            "MB/round": round(sum(r["bytes_down"] + r["bytes_up"] for r in records) / len(records) / 1e6, 2),
            "round s": round(round_s, 3),
            "msg s": round(message_s, 3) if message_s is not None else "-",
            "in/answer/reply/ctx s": "/".join(f"{stage:.2f}" for stage in stages) if stages else "-",
            "outside s": round(message_s - sum(stages), 2) if stages and message_s is not None else "-",
            "overhead s": round(overhead, 3) if remote else "-",
            "share": f"{overhead / round_s:.0%}" if remote else "-",
            "vs in-proc": f"{(round_s - baseline) / round_s:.0%}" if baseline is not None else "-",
            "startup s": round(total_s - sum(r["seconds"] for r in records), 1),
            "load": f"{os.getloadavg()[0]:.1f}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, nargs="+", default=[2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--strategy", default="round-robin")
    parser.add_argument("--local-steps", type=int, default=None, help="steps per round (default: the config's)")
    parser.add_argument("--engines", nargs="+", default=ENGINES, choices=ENGINES)
    parser.add_argument("--supernode-poll", type=float, default=0.1, metavar="S",
                        help="the SuperNode's waits in the deployment-poll engine (default 0.1 s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. strategy.switch=epoch (weights-travelling round-robin)")
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        for parties in args.parties:
            config = bench_config(parties, args.rounds, args.strategy, args.local_steps, args.set)
            baseline = None
            for engine in args.engines:
                run_dir = root / f"{engine}-{parties}p"
                total = run_engine(engine, config, run_dir, args.supernode_poll)
                row = summarize(engine, parties, " ".join(args.set), config, run_dir, total, baseline)
                if engine == "in-process":
                    baseline = float(row["round s"])  # type: ignore[arg-type]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in header) + " |")
    print(f"\n{args.strategy}, {args.rounds} rounds, {os.cpu_count()} cores; load = 1-minute load average "
          "when each engine's run ended (above the core count, wall times are upper bounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

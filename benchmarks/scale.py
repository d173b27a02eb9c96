"""Many parties in one process: peak memory and seconds per round for 10, 30 and 100 parties.

Each measurement is a fresh child process (so its peak RSS is its own, read from ``os.wait4``)
training on the bundled MNIST split ``dirichlet:0.3`` with in-process parties. Memory should grow
linearly in parties: every party holds its share of the data (uint8, disjoint: the shares add up
to one copy of the data set), its discriminator, D's gradients and D's Adam moments; nothing else.
The table also gives that analytic per-party size next to the measured slope.

Run: ``python benchmarks/scale.py [--parties 10 30 100] [--rounds 3] [--strategy avg-output]
[--parties-per-round K]``; prints a markdown table. ``OMP_NUM_THREADS`` is set to 1 in the children.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(parties: int, rounds: int, strategy: str, per_round: int | None) -> None:
    """Train ``rounds`` rounds (plus one warm-up) and print one JSON line of measurements."""
    import torch

    from distgan.config import Config
    from distgan.training import build_coordinator, setup_logging

    torch.set_num_threads(1)
    config = Config().with_overrides([
        "data.source=mnist", "data.split=dirichlet:0.3", f"data.parties={parties}", f"strategy.name={strategy}",
        f"train.rounds={rounds + 1}", "output.sample_every=1000000", "output.checkpoint_every=1000000",
        "output.log_every=1000000", "output.eval_every=1000000",
        f"train.parties_per_round={per_round if per_round else 'none'}"])
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        setup_logging(run_dir, quiet=True)
        started = time.perf_counter()
        coordinator = build_coordinator(config, run_dir)
        setup_s = time.perf_counter() - started
        discriminator = coordinator.trainer.factory.discriminator()
        d_bytes = sum(t.numel() * t.element_size() for t in discriminator.state_dict().values())
        d_params = sum(q.numel() * q.element_size() for q in discriminator.parameters())
        share_bytes = 784 * 5000 // parties  # uint8 images, disjoint shares of the 5,000 digits
        coordinator.run()
        coordinator.parties.close()
        # The first round pays first-call allocations: the per-round time is that of the others.
        seconds = [json.loads(line)["seconds"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
        per_round = sum(seconds[1:]) / len(seconds[1:])
    # state, gradient and two Adam moments per D parameter (+ buffers), and the data share
    print(json.dumps({"setup_s": setup_s, "s_per_round": per_round,
                      "party_bytes": d_bytes + 3 * d_params + share_bytes}))


def measure(parties: int, rounds: int, strategy: str, per_round: int | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", str(parties), "--rounds", str(rounds), "--strategy", strategy]
    if per_round:
        command += ["--parties-per-round", str(per_round)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=environment)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{parties} parties: the child failed (status {status})")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parties", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategy", default="avg-output")
    parser.add_argument("--parties-per-round", type=int, default=None)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.rounds, args.strategy, args.parties_per_round)
        return
    sampled = f", {args.parties_per_round} per round" if args.parties_per_round else ""
    print(f"strategy {args.strategy}, bundled MNIST dirichlet:0.3, default mlp model, batch 64{sampled}, "
          f"{args.rounds} rounds after 1 warm-up, 1 thread\n")
    print("| parties | peak RSS (MiB) | setup (s) | s / round | per party, analytic (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for parties in args.parties:
        row = measure(parties, args.rounds, args.strategy, args.parties_per_round)
        rows.append((parties, row))
        print(f"| {parties} | {row['peak_rss_mib']:.0f} | {row['setup_s']:.1f} | {row['s_per_round']:.3f} | "
              f"{row['party_bytes'] / 2**20:.2f} |", flush=True)
    if len(rows) >= 2:
        (n0, first), (n1, last) = rows[0], rows[-1]
        slope = (last["peak_rss_mib"] - first["peak_rss_mib"]) / (n1 - n0)
        print(f"\nmeasured growth: {slope:.2f} MiB per party ({n0} -> {n1} parties); "
              f"intercept {first['peak_rss_mib'] - slope * n0:.0f} MiB")


if __name__ == "__main__":
    main()

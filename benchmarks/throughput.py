"""Throughput of the harness: does distgan cost anything over a plain loop, and do workers scale?

1. centralized ``paper-mlp`` GAN steps/s through distgan (coordinator, protocol, party, validation)
   vs a plain 40-line PyTorch loop of the same model, batch size and data, in the same process; per
   batch (``strategy.switch=batch``: every step crosses the protocol twice) and per epoch
   (``switch=epoch``: G travels to the pooled party once per epoch). Rates by wall clock and by the
   process's CPU time: on a shared, loaded machine the CPU-time ratio is the one to trust.
   Each repeat runs the three back to back; the ratio printed is the median over repeats of each
   repeat's own ratio (with its range), so a change of machine speed between repeats does not enter it.
2. samples/s of avg-output with 2 and 4 parties over ``--workers`` 1, 2, 4, each worker with its share
   of the cores as torch threads (the default) and with one thread each (``runtime.worker_threads=1``:
   each party on a core of its own, the paper's setting), against one worker of one thread (wall
   clock: parallel speed-ups need idle cores; the load average is printed beside the table). The
   coordinator runs in this process with ``--coordinator-threads`` torch threads (default: ``--threads``):
   its G work comes between the parties' phases, when their cores are idle, so giving it every core is
   what ``distgan train --workers N`` does by default (torch's threads = the cores); it can lift the
   bound that the coordinator's serial share sets on the speed-up (``--coordinator-threads 2`` against
   the default 1 measures by how much).

Run: ``python benchmarks/throughput.py [--steps N] [--repeats R]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distgan.assembly import plan_data
from distgan.config import (
    Config,
    DataConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    StrategyConfig,
    TrainConfig,
)
from distgan.data import load_source
from distgan.models import build_models
from distgan.networks import adam
from distgan.runtime.local import shared_cores
from distgan.training import build_coordinator, setup_logging


def plain_loop_steps_per_s(steps: int, batch: int) -> tuple[float, float]:
    """The reference: the usual GAN loop, nothing else. Returns (wall, CPU-time) steps/s."""
    data = load_source("mnist").images.float().div(127.5).sub(1)
    factory = build_models(ModelConfig(name="paper-mlp"), (1, 28, 28))
    generator, discriminator = factory.generator(), factory.discriminator()
    # The same optimizer distgan builds (fused where torch has it), so the ratio measures the harness.
    train = TrainConfig(lr_g=2e-4, lr_d=2e-4, beta1=0.5)
    g_opt, d_opt = adam(generator, train.lr_g, train), adam(discriminator, train.lr_d, train)
    rng = torch.Generator().manual_seed(0)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(steps):
        real = data[torch.randint(len(data), (batch,), generator=rng)]
        fake = generator(torch.randn(batch, factory.latent_dim, generator=rng))
        d_loss = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake.detach())).mean()
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss = F.softplus(-discriminator(fake)).mean()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
    return steps / (time.perf_counter() - started), steps / (time.process_time() - cpu_started)


def distgan_rounds_per_s(config: Config) -> tuple[float, float]:
    """(wall, CPU-time of this process) rounds/s of ``coordinator.run()`` from the end of its first round
    to the end of its last: the per-round cost, without the run's fixed start and end (sample grids,
    the final checkpoint), which the plain loop does not have either."""
    marks: list[tuple[float, float]] = []

    def mark(coordinator: object, round_number: int, record: object) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        setup_logging(run_dir, quiet=True)
        coordinator = build_coordinator(config, run_dir)
        coordinator.hooks.append(mark)
        try:
            coordinator.run()
        finally:
            coordinator.parties.close()
    rounds = len(marks) - 1
    return (rounds / (marks[-1][0] - marks[0][0]), rounds / (marks[-1][1] - marks[0][1]))


def quiet_output(rounds: int) -> OutputConfig:
    return OutputConfig(sample_every=rounds, checkpoint_every=rounds, eval_every=rounds, log_every=rounds)


class TableRows(list[tuple[str, str, str]]):
    """Rows printed as they are measured (a long benchmark shows its progress, and a cut one its rows)."""

    def append(self, row: tuple[str, str, str]) -> None:
        super().append(row)
        print(f"| {row[0]} | {row[1]} | {row[2]} |", flush=True)


def best(rates: list[tuple[float, float]]) -> tuple[float, float]:
    return max(r[0] for r in rates), max(r[1] for r in rates)


def paired_ratio(ours: list[tuple[float, float]], reference: list[tuple[float, float]], which: int) -> str:
    """Median over repeats of ours / reference measured in the same repeat, and the range of those ratios."""
    ratios = sorted(o[which] / r[which] for o, r in zip(ours, reference))
    return f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}, {ratios[-1]:.2f}]"


def load_average() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (1 keeps the comparison fair on a busy machine)")
    parser.add_argument("--coordinator-threads", type=int, default=0,
                        help="torch threads of the coordinator in the workers rows (default: --threads)")
    parser.add_argument("--skip-workers", action="store_true", help="only the plain-loop comparison")
    parser.add_argument("--skip-harness", action="store_true", help="only the workers rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 64
    load_before = load_average()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, best of {args.repeats}, "
          f"{os.cpu_count()} CPUs; coordinator of the workers rows: {args.coordinator_threads or args.threads} "
          "thread(s)\n")
    print("| measurement | rate (wall / CPU time) | ratio (wall / CPU time; workers: vs 1 worker of 1 thread) |\n|---|---|---|", flush=True)
    rows = TableRows()
    # No weight average: the plain loop keeps none (like for like).
    central = Config(data=DataConfig(split="iid"), model=ModelConfig(name="paper-mlp"),
                     train=TrainConfig(rounds=args.steps, batch_size=batch, g_average=None),
                     strategy=StrategyConfig(name="centralized"), output=quiet_output(args.steps))
    epoch_steps = central.train.steps_per_epoch(sum(len(share) for share in plan_data(central).shares.indices))
    epochs = max(2, round(args.steps / epoch_steps))
    per_epoch = Config(data=DataConfig(split="iid"), model=ModelConfig(name="paper-mlp"),
                       train=TrainConfig(rounds=epochs, batch_size=batch, g_average=None),
                       strategy=StrategyConfig(name="centralized", switch="epoch"), output=quiet_output(epochs))
    # Interleave the three so a change in machine load hits all alike; keep the best of each.
    plain, ours, travelling = [], [], []
    for _ in range(0 if args.skip_harness else args.repeats):
        plain.append(plain_loop_steps_per_s(args.steps, batch))
        ours.append(distgan_rounds_per_s(central))
        wall, cpu = distgan_rounds_per_s(per_epoch)
        travelling.append((wall * epoch_steps, cpu * epoch_steps))
    if not args.skip_harness:
        (plain_wall, plain_cpu), (ours_wall, ours_cpu), (epoch_wall, epoch_cpu) = \
            best(plain), best(ours), best(travelling)
        rows.append(("plain 40-line loop, paper-mlp", f"{plain_wall:.1f} / {plain_cpu:.1f} steps/s", ""))
        rows.append(("distgan centralized, switch=batch", f"{ours_wall:.1f} / {ours_cpu:.1f} steps/s",
                     f"{paired_ratio(ours, plain, 0)} / {paired_ratio(ours, plain, 1)} of plain"))
        rows.append(("distgan centralized, switch=epoch", f"{epoch_wall:.1f} / {epoch_cpu:.1f} steps/s",
                     f"{paired_ratio(travelling, plain, 0)} / {paired_ratio(travelling, plain, 1)} of plain"))

    if not args.skip_workers:
        torch.set_num_threads(args.coordinator_threads or args.threads)
        rounds = max(10, args.steps // (4 * args.local_steps))
        for parties in (2, 4):
            rates: dict[tuple[int, int], float] = {}
            for workers in (1, 2, 4):
                for threads in (1, 0):  # one thread each; the cores shared out (the default)
                    if workers > parties or (threads == 0 and shared_cores(workers) == 1):
                        continue
                    config = Config(data=DataConfig(split="iid", parties=parties),
                                    model=ModelConfig(name="paper-mlp"),
                                    train=TrainConfig(rounds=rounds, batch_size=batch, local_steps=args.local_steps,
                                                      g_average=None),
                                    strategy=StrategyConfig(name="avg-output"),
                                    runtime=RuntimeConfig(workers=workers, worker_threads=threads),
                                    output=quiet_output(rounds))
                    samples_per_round = parties * args.local_steps * batch
                    wall = max(distgan_rounds_per_s(config)[0] for _ in range(args.repeats))
                    rates[workers, threads] = wall * samples_per_round
                    each = "1 thread" if threads else f"{shared_cores(workers)} threads (default)"
                    ratio = "" if (workers, threads) == (1, 1) else f"{rates[workers, threads] / rates[1, 1]:.2f}x"
                    rows.append((f"avg-output {parties} parties, --workers {workers}, {each} each",
                                 f"{rates[workers, threads]:.0f} samples/s", ratio))

    print(f"load average (1/5/15 min) {load_before} before, {load_average()} after")


if __name__ == "__main__":
    main()

"""Throughput of the harness: does distgan cost anything over a plain loop, and do workers scale?

1. centralized ``paper-mlp`` GAN steps/s through distgan (coordinator, protocol, party, validation)
   vs a plain 40-line PyTorch loop of the same model, batch size and data, in the same process.
2. samples/s of 2 parties (avg-output) with ``--workers 1`` vs ``--workers 2``.

Run: ``python benchmarks/throughput.py [--steps N] [--repeats R]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

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
from distgan.training import build_coordinator, setup_logging


def plain_loop_steps_per_s(steps: int, batch: int) -> float:
    """The reference: the usual GAN loop, nothing else."""
    data = load_source("mnist").images.float().div(127.5).sub(1)
    factory = build_models(ModelConfig(name="paper-mlp"), (1, 28, 28))
    generator, discriminator = factory.generator(), factory.discriminator()
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    rng = torch.Generator().manual_seed(0)
    started = time.perf_counter()
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
    return steps / (time.perf_counter() - started)


def distgan_rounds_per_s(config: Config) -> float:
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder)
        setup_logging(run_dir, quiet=True)
        coordinator = build_coordinator(config, run_dir)
        try:
            started = time.perf_counter()
            coordinator.run()
            return config.train.rounds / (time.perf_counter() - started)
        finally:
            coordinator.parties.close()


def quiet_output(rounds: int) -> OutputConfig:
    return OutputConfig(sample_every=rounds, checkpoint_every=rounds, eval_every=rounds, log_every=rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (1 keeps the comparison fair on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 64

    rows = []
    central = Config(data=DataConfig(split="iid"), model=ModelConfig(name="paper-mlp"),
                     # No weight average: the plain loop keeps none (like for like).
                     train=TrainConfig(rounds=args.steps, batch_size=batch, g_average=None),
                     strategy=StrategyConfig(name="centralized"), output=quiet_output(args.steps))
    # Interleave the two so a change in machine load hits both alike; keep the best of each.
    plain = ours = 0.0
    for _ in range(args.repeats):
        plain = max(plain, plain_loop_steps_per_s(args.steps, batch))
        ours = max(ours, distgan_rounds_per_s(central))
    rows.append(("plain 40-line loop, paper-mlp", f"{plain:.1f} steps/s", ""))
    rows.append(("distgan centralized, paper-mlp", f"{ours:.1f} steps/s", f"{ours / plain:.2f}x of plain"))

    rounds = max(10, args.steps // (4 * args.local_steps))
    rates = {}
    for workers in (1, 2):
        config = Config(data=DataConfig(split="labels:0-4/5-9"), model=ModelConfig(name="paper-mlp"),
                        train=TrainConfig(rounds=rounds, batch_size=batch, local_steps=args.local_steps, g_average=None),
                        strategy=StrategyConfig(name="avg-output"), runtime=RuntimeConfig(workers=workers),
                        output=quiet_output(rounds))
        samples_per_round = 2 * args.local_steps * batch
        rates[workers] = max(distgan_rounds_per_s(config) for _ in range(args.repeats)) * samples_per_round
    rows.append(("avg-output 2 parties, --workers 1", f"{rates[1]:.0f} samples/s", ""))
    rows.append(("avg-output 2 parties, --workers 2", f"{rates[2]:.0f} samples/s",
                 f"{rates[2] / rates[1]:.2f}x of 1 worker"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, "
          f"best of {args.repeats}\n")
    print("| measurement | rate | ratio |\n|---|---|---|")
    for row in rows:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")


if __name__ == "__main__":
    main()

"""local-only (baseline): every party trains a GAN of its own on its own data; nothing is shared.

Each round every selected party trains its own G and D for ``local_steps`` steps
(``TrainLocalGAN`` without weights, so it continues from its own). No weights are averaged and the
platform's generator is never trained. The run's output is **party 0's generator: what one data
holder gets alone**, the yardstick that shows what collaboration adds. The platform keeps a copy of
it, refreshed from party 0's reply, to draw sample grids and serve ``distgan sample``.

Only party 0 is asked to return its generator (for grids and sampling); the others return
statistics alone, so ``bytes_up`` counts only what a real local-only deployment would send.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from distgan import protocol as p
from distgan.config import Config
from distgan.networks import build_generator
from distgan.parties import Parties
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext, only

REPORTED_PARTY = 0
"""The party whose generator is the run's output."""


@STRATEGIES.register("local-only", "baseline: each party trains its own GAN alone; output is party 0's G")
class LocalOnly(Strategy):
    name = "local-only"

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.TrainLocalGAN,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # each party's own G, in parallel

    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        # Same initial weights as every party's own G, so round 0's grid matches party 0's G too.
        self.reported_generator = build_generator(context.factory, self.config.runtime.seed).to(self.trainer.device)
        self.reported_generator.requires_grad_(False)

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        replies = only(parties.request({j: p.TrainLocalGAN(steps=self.local_steps, return_generator=j == REPORTED_PARTY,
                                                          return_discriminator=False) for j in selected}),
                       p.WeightsReply)
        answered = sorted(replies)
        weights = {j: cast(p.WeightsReply, replies[j]) for j in answered}
        reported = weights.get(REPORTED_PARTY)
        if reported is not None and reported.generator:
            self.reported_generator.load_state_dict(reported.generator)
        # g_loss: the mean over parties of each one's own G loss (there is no shared G).
        g_loss = sum(w.g_loss for w in weights.values()) / max(1, len(weights))
        return RoundResult(g_loss, {j: w.stats for j, w in weights.items()})

    def sampling_generator(self) -> nn.Module:
        return self.reported_generator

"""fedgan (Rasouli, Sun & Rajagopal 2020, "FedGAN"): local GANs, averaged every ``local_steps`` steps.

Each round the coordinator sends every selected party the averaged G and D; the party loads them
into its own G and D, trains both on its own data for ``local_steps`` steps (its Adam states stay
local, as in FedGAN, where only parameters are synchronised), and returns both. The coordinator
averages the returned weights (by data size with ``strategy.weighted``, FedGAN's weighting; else
equally) into the platform's generator, which is the run's output, and a global D, both sent in
the next round's request. Batch-norm running statistics are averaged like weights; integer
buffers (``num_batches_tracked``) are taken from one party (see :mod:`.averaging`).
"""

from __future__ import annotations

from typing import cast

import torch

from distgan import protocol as p
from distgan.checkpoint import prefixed, unprefixed
from distgan.config import Config
from distgan.networks import build_discriminator, cpu_state_dict
from distgan.parties import Parties
from distgan.strategies.averaging import average_states
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext, only


@STRATEGIES.register("fedgan", "baseline (Rasouli et al. 2020): parties train G and D locally; both averaged")
class FedGAN(Strategy):
    name = "fedgan"

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.TrainLocalGAN,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # each party's local G, in parallel; then averaged

    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        # Starts from every party's initial D (shared seed); kept on the CPU: it is only averaged and sent.
        self.global_d = build_discriminator(context.factory, self.config.runtime.seed)
        self.global_d.requires_grad_(False)

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        request = p.TrainLocalGAN(steps=self.local_steps, generator=cpu_state_dict(self.trainer.module),
                                  discriminator=cpu_state_dict(self.global_d))
        replies = only(parties.request_all(request, selected), p.WeightsReply)
        answered = sorted(replies)
        if not answered:
            return RoundResult(0.0, {})
        local = [cast(p.WeightsReply, replies[j]) for j in answered]
        missing = [j for j, w in zip(answered, local) if not w.generator or not w.discriminator]
        if missing:
            raise p.ProtocolError(f"parties {missing}: fedgan needs both G and D weights in the reply")
        weights = self.party_weights(answered)
        self.trainer.module.load_state_dict(average_states([cast(p.Weights, w.generator) for w in local], weights))
        self.global_d.load_state_dict(average_states([cast(p.Weights, w.discriminator) for w in local], weights))
        g_loss = float(sum(float(share) * w.g_loss for share, w in zip(weights, local)))
        return RoundResult(g_loss, {j: w.stats for j, w in zip(answered, local)})

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return prefixed("global_d", self.global_d.state_dict())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.global_d.load_state_dict(unprefixed("global_d", tensors))

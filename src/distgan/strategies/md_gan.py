"""md-gan (Hardy, Le Merrer & Sericola 2019, "MD-GAN"): one G on the platform, one D per party,
error feedback averaged, discriminators swapped among parties every ``strategy.swap_every`` rounds
(or once per epoch, MD-GAN's own rule, with ``strategy.swap_per_epoch``).

Each round every selected party trains D_j on real vs the round's generated batches and returns
its error feedback on them: D_j's logits and d logit / d image. MD-GAN's server update is the
(weighted) mean of the parties' feedback, i.e. the mean of the gradients of each party's *own*
generator loss, ``sum_j w_j dL_j/dx`` with ``L_j = mean_b softplus(-D_j(x_b))``
(:func:`distgan.losses.mean_of_generator_losses`). That differs from avg-output (the paper's
Alg. 2), whose loss mixes the parties' probabilities before the log. All parties score the same
batches: MD-GAN's k = 1 (the paper allows 1 <= k <= N distinct batches).

Every ``swap_every`` rounds, after the round's training, the parties swap discriminators (MD-GAN
does so to keep each D from overfitting its local data): every active party exports D_j and
receives another party's, along a random cycle through all of them, so every D moves and none
comes back to its owner. The cycle is drawn from a generator seeded by (run seed, round), so it
is reproducible and needs no state in checkpoints. Only weights move; each party keeps its own
Adam state. Here the weights travel through the coordinator (MD-GAN sends them peer to peer), so
the platform sees them; a swap costs two D transfers per party in ``bytes_up`` / ``bytes_down``.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from distgan import protocol as p
from distgan.config import Config
from distgan.losses import mean_of_generator_losses
from distgan.parties import Parties
from distgan.seeding import make_generator
from distgan.strategies.avg_output import AverageOutput
from distgan.strategies.base import STRATEGIES, RoundResult, only


def swap_cycle(parties: list[int], seed: int, round_index: int) -> dict[int, int]:
    """``receiver -> giver``: a random single cycle through ``parties`` (no party keeps its own D)."""
    if len(parties) < 2:
        return {}
    rng = make_generator(seed, "md-gan-swap", round_index)
    order = [parties[i] for i in torch.randperm(len(parties), generator=rng).tolist()]
    return {order[(i + 1) % len(order)]: giver for i, giver in enumerate(order)}


@STRATEGIES.register("md-gan", "baseline (Hardy et al. 2019): averaged D feedback, parties swap Ds every E rounds")
class MDGAN(AverageOutput):
    """avg-output's round with MD-GAN's feedback rule, then the discriminator swap."""

    name = "md-gan"
    combine = staticmethod(mean_of_generator_losses)  # type: ignore[assignment]

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.TrainDiscriminator, p.ExportDiscriminator, p.ImportDiscriminator)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # as avg-output; the swap trains nothing

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        result = super().run_round(round_index, parties, selected)
        swapped = 0.0
        if (round_index + 1) % self.swap_interval() == 0:
            swapped = float(len(self.swap(round_index, parties)))
        result.extra["swapped_discriminators"] = swapped
        return result

    def swap_interval(self) -> int:
        """Rounds between swaps: ``strategy.swap_every``, or one epoch of the mean party's data
        (``strategy.swap_per_epoch``; each round is one batch per party)."""
        if not self.config.strategy.swap_per_epoch:
            return self.config.strategy.swap_every
        sizes = list(self.context.party_sizes.values())
        return max(1, math.ceil(sum(sizes) / len(sizes) / self.config.train.batch_size))

    def swap(self, round_index: int, parties: Parties) -> dict[int, int]:
        """Move every active party's D to the next party of this round's cycle; returns the plan."""
        exported = only(parties.request_all(p.ExportDiscriminator()), p.WeightsReply)
        plan = swap_cycle(sorted(exported), self.config.runtime.seed, round_index)
        imports: dict[int, p.Message] = {}
        for receiver, giver in plan.items():
            weights = cast(p.WeightsReply, exported[giver]).discriminator
            if not weights:
                raise p.ProtocolError(f"party {giver}: md-gan swap needs D weights in the export reply")
            imports[receiver] = p.ImportDiscriminator(weights)
        parties.request(imports)
        return plan

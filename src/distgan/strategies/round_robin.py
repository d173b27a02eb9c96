"""round-robin (the paper's Alg. 3): one generator trained against each party's D in turn.

Each round, for each party j in order: the platform sends G's fakes, D_j trains on real vs fake
for ``local_steps`` steps and returns its feedback on those fakes; G then takes ``local_steps``
steps on D_j's feedback. With one step this is the usual GAN loop with D_j in the D's place.
"""

from __future__ import annotations

from typing import ClassVar, cast

from distgan import protocol as p
from distgan.config import Config
from distgan.runtime.base import Parties
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, only


@STRATEGIES.register("round-robin", "Alg. 3: G trains against each party's D in turn")
class RoundRobin(Strategy):
    name = "round-robin"
    sends: ClassVar[tuple[type[p.Message], ...]] = (p.TrainDiscriminator,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        parties = config.train.parties_per_round if config.train.parties_per_round is not None else config.data.parties
        return parties * config.train.local_steps  # G steps against each selected party's D in turn

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        stats: dict[int, p.DiscriminatorStats] = {}
        g_losses = []
        for party in selected:
            batches = self.trainer.fakes(self.local_steps)
            replies = only(parties.request({party: p.TrainDiscriminator(batches.images, feedback=True)}),
                           p.Feedback)
            if party not in replies:
                continue
            feedback = cast(p.Feedback, replies[party])
            g_losses.append(self.trainer.step_on_feedback(batches, [feedback]))
            stats[party] = feedback.stats
        return RoundResult(sum(g_losses) / max(1, len(g_losses)), stats)


@STRATEGIES.register("centralized", "baseline: the paper's normal GAN on the pooled data of all parties")
class Centralized(RoundRobin):
    """One D on the union of the parties' data: round-robin over the single pooled party."""

    name = "centralized"
    pooled_data = True
    sends: ClassVar[tuple[type[p.Message], ...]] = (p.TrainDiscriminator,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # one pooled party

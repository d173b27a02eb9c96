"""round-robin (the paper's Alg. 3): one generator trained against each party's D in turn.

``strategy.switch`` decides when G moves on to the next party.

``batch`` (default): each round, for each party j in order, the platform sends G's fakes, D_j trains on
real vs fake for ``local_steps`` steps and returns its feedback on those fakes; G then takes
``local_steps`` steps on D_j's feedback. With one step this is the usual GAN loop with D_j in the D's
place, and G switches party after every batch. Messages grow with ``local_steps`` (batches and their
gradients), and for ``local_steps > 1`` G's steps s > 0 use feedback one step stale.

``epoch`` (the paper's Alg. 3 as written: ``for i in epochs: for j in users: D_j trains on its data; G
trains on D_j``): G's weights and Adam state travel to party j, which runs the usual GAN loop -- a D_j
step on a real batch vs G(z), then a G step against D_j -- for one pass over its data
(``ceil(n_j / batch)`` steps, each on a batch drawn at random), and sends G and its Adam state back; the
platform passes G on to the next party. A round is one such epoch of every selected party, in turn:
``--rounds`` counts passes over the parties' data, progress and ETA are per pass, and G's weight average
ticks once per G step (:meth:`~distgan.generator.GeneratorTrainer.update_average`). A message carries G
and its optimizer state, whatever the epoch's length, and every G step uses D_j's current gradient
(nothing stale). What the party learns that it did not before: G's weights and Adam state (it already
saw G's samples). The party's latents come from its own seeded stream.
"""

from __future__ import annotations

import math
from typing import cast

from distgan import protocol as p
from distgan.config import Config
from distgan.parties import Parties
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, only


@STRATEGIES.register("round-robin", "Alg. 3: G trains against each party's D in turn (strategy.switch: batch|epoch)")
class RoundRobin(Strategy):
    name = "round-robin"

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.TrainGeneratorEpoch,) if config.strategy.switch == "epoch" else (p.TrainDiscriminator,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        if config.strategy.switch == "epoch":  # one pass over every party's data: ceil(n_j / batch) G steps each
            return sum(math.ceil(size / config.train.batch_size) for size in _share_sizes(config))
        parties = config.train.parties_per_round if config.train.parties_per_round is not None else config.data.parties
        return parties * config.train.local_steps  # G steps against each selected party's D in turn

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        if self.config.strategy.switch == "epoch":
            return self._epoch_round(parties, selected)
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

    def _epoch_round(self, parties: Parties, selected: list[int]) -> RoundResult:
        """G travels: party by party, one epoch of its data each; the round's G loss is the step-weighted mean."""
        stats: dict[int, p.DiscriminatorStats] = {}
        loss_sum, g_steps = 0.0, 0
        for party in selected:
            generator, optimizer = self.trainer.travelling_state()
            replies = only(parties.request({party: p.TrainGeneratorEpoch(generator, optimizer)}), p.GeneratorReply)
            if party not in replies:
                continue  # a failed party: G stays as it was before the visit
            reply = cast(p.GeneratorReply, replies[party])
            self.trainer.load_travelled_state(reply.generator, reply.optimizer)
            loss_sum += reply.g_loss * reply.g_steps
            g_steps += reply.g_steps
            stats[party] = reply.stats
        return RoundResult(loss_sum / max(1, g_steps), stats, g_steps=g_steps)


@STRATEGIES.register("centralized", "baseline: the paper's normal GAN on the pooled data of all parties")
class Centralized(RoundRobin):
    """One D on the union of the parties' data: round-robin over the single pooled party (with
    ``strategy.switch=epoch``, G travels to it and a round is one epoch of the pooled data)."""

    name = "centralized"
    pooled_data = True

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return RoundRobin.sends(config)  # round-robin over its one pooled party

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        if config.strategy.switch == "epoch":  # one pass over the pooled data
            return math.ceil(sum(_share_sizes(config)) / config.train.batch_size)
        return config.train.local_steps  # one pooled party


def _share_sizes(config: Config) -> list[int]:
    """Samples of each party under the run's split (planned from the config, as the runtime does)."""
    from distgan.assembly import plan_data

    return [len(index) for index in plan_data(config).shares.indices]

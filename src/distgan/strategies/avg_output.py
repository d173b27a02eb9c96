"""avg-output (the paper's Alg. 2): G trained on the average of all parties' D outputs.

Each round every party trains D_j on real vs the same fakes and returns D_j's logits and
d logit / d image on them. G's loss is ``BCE(sum_j w_j D_j(G(z)), 1)`` (equal weights, or by data
size with ``strategy.weighted``); its gradient is assembled exactly on the platform by the chain
rule (:func:`distgan.losses.generator_input_gradient`).
"""

from __future__ import annotations

from typing import ClassVar, cast

from distgan import protocol as p
from distgan.config import Config
from distgan.losses import GeneratorLoss, generator_loss
from distgan.parties import Parties
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, only


@STRATEGIES.register("avg-output", "Alg. 2: G trains on the (weighted) mean of all parties' D outputs")
class AverageOutput(Strategy):
    name = "avg-output"

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.TrainDiscriminator,)
    combine: ClassVar[GeneratorLoss] = staticmethod(generator_loss)  # type: ignore[assignment]
    """How the parties' logits make G's loss: here the paper's mean of probabilities."""

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # one G step per feedback batch, on all parties' feedback at once

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        batches = self.trainer.fakes(self.local_steps)
        replies = only(parties.request_all(p.TrainDiscriminator(batches.images, feedback=True), selected),
                       p.Feedback)
        answered = sorted(replies)
        feedback = [cast(p.Feedback, replies[j]) for j in answered]
        g_loss = self.trainer.step_on_feedback(batches, feedback, self.party_weights(answered),
                                               type(self).combine) if feedback else 0.0
        return RoundResult(g_loss, {j: f.stats for j, f in zip(answered, feedback)})

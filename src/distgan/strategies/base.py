"""What every strategy is: one round of work against the ``Parties`` handle.

A strategy never knows whether parties are objects in this process, worker processes or Flower
SuperNodes; it only builds requests from :mod:`distgan.protocol` and reads replies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from distgan import protocol as p
from distgan.config import Config
from distgan.generator import GeneratorTrainer
from distgan.models import ModelFactory
from distgan.registry import Registry
from distgan.runtime.base import Parties


@dataclass
class RoundResult:
    g_loss: float
    party_stats: dict[int, p.DiscriminatorStats]
    extra: dict[str, float] = field(default_factory=dict)
    g_steps: int | None = None
    """G steps taken away from the platform this round (weights-travelling round-robin): G's average then
    ticks once per step; None: once per round (:meth:`GeneratorTrainer.update_average`)."""


@dataclass
class StrategyContext:
    config: Config
    trainer: GeneratorTrainer
    factory: ModelFactory
    party_sizes: dict[int, int]
    """Sample count of each party, from its Description (public)."""


class Strategy(ABC):
    name: ClassVar[str]
    pooled_data: ClassVar[bool] = False
    """True for the centralized baseline: the runtime builds one party holding all shares."""

    def __init__(self, context: StrategyContext) -> None:
        self.context = context
        self.config = context.config
        self.trainer = context.trainer

    @abstractmethod
    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        """Run one round with the ``selected`` (active, possibly sampled) parties."""

    @property
    def local_steps(self) -> int:
        return self.config.train.local_steps

    def party_weights(self, parties: list[int]) -> torch.Tensor:
        """Equal weights, or by data size when ``strategy.weighted``; they sum to 1."""
        if self.config.strategy.weighted:
            sizes = torch.tensor([float(self.context.party_sizes[j]) for j in parties])
        else:
            sizes = torch.ones(len(parties))
        return sizes / sizes.sum()

    def sampling_generator(self) -> nn.Module:
        """The generator whose samples are the run's output."""
        return self.trainer.output_module

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Strategy state beyond G (e.g. the server D), for checkpoints."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved."""


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def only(replies: dict[int, p.Message], kind: type[p.Message]) -> dict[int, p.Message]:
    """Replies of the expected type; anything else is a protocol violation of that party."""
    for party, reply in replies.items():
        if not isinstance(reply, kind):
            raise p.ProtocolError(f"party {party}: expected {kind.__name__}, got {type(reply).__name__}")
    return replies

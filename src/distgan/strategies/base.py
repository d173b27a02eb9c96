"""What every strategy is: one round of work against the ``Parties`` handle.

A strategy never knows whether parties are objects in this process, worker processes or Flower
SuperNodes; it only builds requests from :mod:`distgan.protocol` and reads replies.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from distgan import protocol as p
from distgan.config import Config
from distgan.generator import GeneratorTrainer
from distgan.models import ModelFactory
from distgan.parties import Parties
from distgan.registry import Registry


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
    """A strategy class states its facts in its own body (``check_facts`` refuses to register one that
    does not), and everything else asks the class instead of keeping a table of strategy names:

    * :meth:`sends`: the request classes its rounds send under a config (``Describe``, ``SaveState`` and
      ``LoadState`` are the platform's); from them and their replies' facts (``protocol.Message``):
      what its parties reveal (:meth:`feedback_only`), whether G learns from per-step feedback
      (:meth:`learns_from_feedback`), whether its messages carry generated images (:meth:`sends_fakes`);
    * :meth:`generator_steps_per_round`: G optimizer steps one round takes (experiment budgets).

    The derived facts take the run's config (``None``: the strategy's defaults).
    """

    name: ClassVar[str]
    pooled_data: ClassVar[bool] = False
    """True for the centralized baseline: the runtime builds one party holding all shares."""
    label_conditional: ClassVar[bool] = False
    """True when the strategy trains a label-conditional G (:mod:`distgan.models.conditional`)."""

    @classmethod
    @abstractmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        """The requests a round of this strategy sends to parties under ``config``."""

    @classmethod
    @abstractmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        """G optimizer steps one round of this strategy takes under ``config``."""

    @classmethod
    def _config(cls, config: Config | None) -> Config:
        if config is not None:
            return config
        default = Config()
        default.strategy.name = cls.name
        return default

    @classmethod
    def replies(cls, config: Config | None = None) -> tuple[type[p.Message], ...]:
        """Every reply class its requests may get."""
        requests = cls.sends(cls._config(config))
        return tuple({reply: None for request in requests for reply in p.reply_types(request)})

    @classmethod
    def feedback_only(cls, config: Config | None = None) -> bool:
        """Parties reveal only statistics and feedback on generated images, never weights."""
        return all(reply.reveals != "weights" for reply in cls.replies(config))

    @classmethod
    def releases_once(cls, config: Config | None = None) -> bool:
        """Parties release a statistic of their data itself, once (dp-merf's embedding)."""
        return any(reply.reveals == "embedding" for reply in cls.replies(config))

    @classmethod
    def learns_from_feedback(cls, config: Config | None = None) -> bool:
        """G steps on the parties' per-step feedback (``local_steps > 1`` makes it stale)."""
        return any(reply is p.Feedback for reply in cls.replies(config))

    @classmethod
    def sends_fakes(cls, config: Config | None = None) -> bool:
        """Its requests carry generated images, a batch per D step (message size grows with the steps)."""
        return any("fakes" in {f.name for f in dataclasses.fields(request)}  # type: ignore[arg-type]
                   for request in cls.sends(cls._config(config)))

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


def check_facts(strategy: type[Strategy]) -> None:
    """A registered strategy states ``name``, ``sends`` and ``generator_steps_per_round`` in its own
    body (inheriting them silently is how a subclass gets a parent's wrong budget)."""
    own = vars(strategy)
    missing = [fact for fact in ("name", "sends", "generator_steps_per_round") if fact not in own]
    if missing:
        raise TypeError(f"strategy class {strategy.__qualname__} must state {', '.join(missing)} in its own body; "
                        "see distgan.strategies.base.Strategy")
    for request in strategy.sends(strategy._config(None)):
        if getattr(request, "direction", None) != "down":
            raise TypeError(f"{strategy.__qualname__}.sends: {request!r} is not a request class of distgan.protocol")
        p.reply_types(request)


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", check=check_facts)


def only(replies: dict[int, p.Message], kind: type[p.Message]) -> dict[int, p.Message]:
    """Replies of the expected type; anything else is a protocol violation of that party."""
    for party, reply in replies.items():
        if not isinstance(reply, kind):
            raise p.ProtocolError(f"party {party}: expected {kind.__name__}, got {type(reply).__name__}")
    return replies

"""Facts on their owners: every message class and every strategy class states its facts, a class
that lacks one fails where it is defined or registered, and the stated facts match what a round does.

Adding a strategy = its file (stating ``sends`` and ``generator_steps_per_round``), its registry line
and its test; adding a message = its class (stating ``replies``/``runs_discriminator`` or ``reveals``)
in ``protocol.REQUESTS``/``REPLIES``. Nothing else keeps a table of their names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from distgan import protocol as p
from distgan.config import Config
from distgan.registry import Registry
from distgan.strategies import STRATEGIES
from distgan.strategies.base import RoundResult, Strategy, check_facts
from tests.conftest import tiny_config
from tests.test_strategies import build_run

PLATFORM_REQUESTS = (p.Describe, p.SaveState, p.LoadState)
"""Sent by the platform (set-up, checkpoints), not by a strategy's rounds."""


def test_every_message_states_its_facts() -> None:
    for request in p.REQUESTS:
        assert request.direction == "down" and isinstance(request.runs_discriminator, bool)
        assert p.reply_types(request), request
        assert all(reply.direction == "up" for reply in p.reply_types(request))
    for reply in p.REPLIES:
        assert reply.direction == "up" and reply.reveals in p.REVEALS


def test_a_message_without_its_facts_fails_where_it_is_defined() -> None:
    with pytest.raises(TypeError, match="must state replies and runs_discriminator"):
        class Ping(p.Message):
            kind = "query.ping"
            direction = "down"
    with pytest.raises(TypeError, match="reveals='secrets'"):
        class Leak(p.Message):
            kind = "reply.leak"
            direction = "up"
            reveals = "secrets"


def test_a_strategy_without_its_facts_fails_where_it_is_registered() -> None:
    registry: Registry[type[Strategy]] = Registry("strategy", check=check_facts)

    class Parent(Strategy):
        name = "parent"

        @classmethod
        def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
            return (p.TrainDiscriminator,)

        @classmethod
        def generator_steps_per_round(cls, config: Config) -> int:
            return 1

        def run_round(self, round_index: int, parties: object, selected: list[int]) -> RoundResult:
            raise NotImplementedError

    class Child(Parent):  # inherits the parent's budget silently: refused
        name = "child"

    registry.register("parent")(Parent)
    with pytest.raises(TypeError, match="Child must state sends, generator_steps_per_round"):
        registry.register("child")(Child)


VARIANTS = {"round-robin": {"strategy__switch": "epoch", "train__local_steps": 1},
            "server-d": {"strategy__fakes": "party"}}
"""Options that make a strategy send other messages (their facts are checked too)."""
CASES = [(name, {}) for name in STRATEGIES.names()] + list(VARIANTS.items())


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{'-' + '-'.join(o.values()) if o else ''}"
                                                           for n, o in [(n, {k: str(v) for k, v in o.items()})
                                                                        for n, o in CASES]])
def test_stated_facts_match_what_a_round_does(name: str, options: dict[str, object], tmp_path: Path) -> None:
    strategy = STRATEGIES.get(name)
    settings = {"train__local_steps": 2, "strategy__swap_every": 1, **options}  # md-gan swaps too
    config = tiny_config(name, parties=3, **settings)
    run = build_run(config, tmp_path)
    for _ in range(2):
        run.round()
    stated = set(strategy.sends(config))
    sent = {type(request) for _, request, _ in run.log} - set(PLATFORM_REQUESTS)
    assert sent == stated, f"{name} sent {sent}, states {stated}"
    assert {type(reply) for _, _, reply in run.log} <= set(strategy.replies(config))
    steps = strategy.generator_steps_per_round(config)
    travelled = [reply.g_steps for _, _, reply in run.log if isinstance(reply, p.GeneratorReply)]
    if travelled:  # G's weights travel: the parties report the steps they took
        assert sum(travelled) == 2 * steps
        return
    optimizer = run.coordinator.trainer.optimizer
    platform_steps = max((int(state["step"]) for state in optimizer.state.values()), default=0)
    if platform_steps:  # G trains on the platform
        assert platform_steps == 2 * steps
    else:  # each party trains its own G (fedgan, local-only): the steps it is asked for
        assert {request.steps for _, request, _ in run.log if isinstance(request, p.TrainLocalGAN)} == {steps}


def test_derived_facts_of_the_registered_strategies() -> None:
    feedback_only = {n for n in STRATEGIES.names() if STRATEGIES.get(n).feedback_only()}
    assert {"avg-output", "round-robin", "centralized"} <= feedback_only
    assert not feedback_only & {"server-d", "md-gan", "fedgan", "local-only"}  # they send D weights

"""Every registered strategy on fake data: what one round changes, and what it must leave alone.

Parties are real :class:`Party` objects in this process, so a test can look inside them after a
round; an observer on the ``Parties`` handle records every request and reply that crossed it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from distgan import protocol as p
from distgan.assembly import build_party, make_factory, plan_data
from distgan.config import Config
from distgan.coordinator import Coordinator
from distgan.losses import generator_input_gradient, generator_loss, mean_of_generator_losses
from distgan.party import Party, flat_parameters
from distgan.runtime.local import InProcessParties
from distgan.strategies import STRATEGIES
from distgan.training import build_coordinator
from tests.conftest import tiny_config


@dataclass
class Run:
    coordinator: Coordinator
    parties: list[Party]
    handle: InProcessParties
    log: list[tuple[int, p.Message, p.Message]]

    @property
    def strategy(self) -> Any:  # the concrete strategy: tests read its own attributes
        return self.coordinator.strategy

    def round(self, selected: list[int] | None = None) -> None:
        self.coordinator.train_round(self.handle.active if selected is None else selected)
        self.coordinator.round += 1

    def replies(self, kind: type[p.Message]) -> dict[int, p.Message]:
        return {party: reply for party, _, reply in self.log if isinstance(reply, kind)}

    def requests(self, kind: type[p.Message]) -> dict[int, p.Message]:
        return {party: request for party, request, _ in self.log if isinstance(request, kind)}


def build_run(config: Config, run_dir: Path) -> Run:
    pooled = STRATEGIES.get(config.strategy.name).pooled_data
    plan = plan_data(config)
    factory = make_factory(config, plan)
    parties = [build_party(config, plan, j, run_dir, pooled) for j in range(1 if pooled else config.data.parties)]
    handle = InProcessParties(parties, p.Expectations(factory.image_shape, config.train.batch_size,
                                                      config.train.local_steps * 4))
    log: list[tuple[int, p.Message, p.Message]] = []
    handle.observers.append(lambda party, request, reply: log.append((party, request, reply)))
    coordinator = build_coordinator(config, run_dir, parties=handle)
    log.clear()  # forget the set-up's Describe messages
    return Run(coordinator, parties, handle, log)


def flat(module: torch.nn.Module) -> torch.Tensor:
    return flat_parameters(module).clone()


def snapshot(run: Run) -> dict[str, torch.Tensor]:
    state = {"platform G": flat(run.coordinator.trainer.module),
             "sampling G": flat(run.strategy.sampling_generator())}
    state.update({f"party {j} D": flat(party.discriminator) for j, party in enumerate(run.parties)})
    held = [v.flatten().clone() for v in run.strategy.state_tensors().values() if v.dtype.is_floating_point]
    state["strategy state"] = torch.cat(held) if held else torch.zeros(0)
    return state


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


ALL_DS = {"party 0 D", "party 1 D"}
EXPECTED_CHANGES = {
    "round-robin": {"platform G", "sampling G"} | ALL_DS,
    "avg-output": {"platform G", "sampling G"} | ALL_DS,
    "md-gan": {"platform G", "sampling G"} | ALL_DS,
    "centralized": {"platform G", "sampling G", "party 0 D"},
    "server-d": {"platform G", "sampling G", "strategy state"} | ALL_DS,  # the server D
    "fedgan": {"platform G", "sampling G", "strategy state"} | ALL_DS,  # the averaged D
    # The platform's G is never trained: the output is party 0's own G (checkpointed as the sampler).
    "local-only": {"sampling G"} | ALL_DS,
    # No D trains: the parties release their embeddings once; the strategy state is their sum.
    "dp-merf": {"platform G", "sampling G", "strategy state"},
}


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_one_round_changes_exactly_what_the_strategy_trains(tmp_path, name):
    assert name in EXPECTED_CHANGES, f"new strategy {name!r}: add what one round of it changes"
    run = build_run(tiny_config(name, strategy__swap_every=1000), tmp_path)
    before = snapshot(run)
    run.round()
    assert changed(before, snapshot(run)) == EXPECTED_CHANGES[name]


@pytest.mark.parametrize("name", [n for n in STRATEGIES.names()  # dp-merf's one release asks every party
                                  if not STRATEGIES.get(n).pooled_data and n != "dp-merf"])
def test_a_party_left_out_of_a_round_is_untouched(tmp_path, name):
    run = build_run(tiny_config(name, strategy__swap_every=1000), tmp_path)
    before = snapshot(run)
    run.round(selected=[0])
    after = changed(before, snapshot(run))
    assert "party 0 D" in after and "party 1 D" not in after
    assert all(party != 1 for party, _, _ in run.log), "a message reached party 1"

@pytest.mark.parametrize("name", ["round-robin", "fedgan"])
def test_d_steps_trains_each_d_that_many_times_per_g_step(tmp_path, name):
    run = build_run(tiny_config(name, train__d_steps=3), tmp_path)
    run.round()
    adam_steps = [int(next(iter(party.d_optimizer.state.values()))["step"]) for party in run.parties]
    assert adam_steps == [3, 3]
    assert [reply.stats.steps for _, _, reply in run.log] == [3, 3]  # type: ignore[attr-defined]


# -- avg-output and md-gan: the G gradient assembled from feedback equals autograd's ----------------
def trained_parties(tmp_path: Path, strategy: str) -> Run:
    # No dropout: the reference below re-runs each D, which must give the same function twice.
    run = build_run(tiny_config(strategy, model__d_dropout=0.0), tmp_path)
    # One D step on each party's own data, so the two discriminators differ.
    fakes = run.coordinator.trainer.fakes(1).images
    run.handle.request_all(p.TrainDiscriminator(fakes))
    assert not torch.equal(flat(run.parties[0].discriminator), flat(run.parties[1].discriminator))
    return run


@pytest.mark.parametrize("loss_of_logits", [generator_loss, mean_of_generator_losses])
def test_feedback_input_gradient_equals_autograd(tmp_path, loss_of_logits):
    run = trained_parties(tmp_path, "avg-output")
    images = run.coordinator.trainer.fakes(1).images  # [1, B, C, H, W]
    replies = run.handle.request_all(p.QueryFeedback(images))
    logits = torch.stack([replies[j].logits[0] for j in (0, 1)])  # type: ignore[attr-defined]
    gradients = torch.stack([replies[j].input_gradients[0] for j in (0, 1)])  # type: ignore[attr-defined]
    weights = torch.tensor([0.3, 0.7])
    loss, assembled = generator_input_gradient(logits, gradients, weights, loss_of_logits)

    x = images[0].clone().requires_grad_(True)
    reference = loss_of_logits(torch.stack([party.discriminator(x) for party in run.parties]), weights)
    (expected,) = torch.autograd.grad(reference, x)
    assert loss == pytest.approx(float(reference), rel=1e-5)
    torch.testing.assert_close(assembled, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("name", "loss_of_logits"), [("avg-output", generator_loss),
                                                        ("md-gan", mean_of_generator_losses)])
def test_round_gives_generator_the_autograd_parameter_gradient(tmp_path, name, loss_of_logits):
    """One round's G gradient (feedback from two real parties) equals autograd on a one-process copy."""
    run = trained_parties(tmp_path, name)
    trainer = run.coordinator.trainer
    generator_before = copy.deepcopy(trainer.module)
    latent_state = trainer.rng.get_state()
    discriminators = [copy.deepcopy(party.discriminator) for party in run.parties]
    run.round()  # the parties train their D on the round's fakes first, then score them
    party_request = run.requests(p.TrainDiscriminator)[0]
    fakes = party_request.fakes[0]  # type: ignore[attr-defined]

    # Reference: the parties' D after their training step, scored directly on G's output.
    trained = [copy.deepcopy(party.discriminator) for party in run.parties]
    assert not torch.equal(flat(trained[0]), flat(discriminators[0]))
    trainer.rng.set_state(latent_state)
    latents = trainer.latents(run.coordinator.config.train.batch_size)
    output = generator_before(latents)
    torch.testing.assert_close(output.detach(), fakes)
    reference = loss_of_logits(torch.stack([d(output) for d in trained]), run.strategy.party_weights([0, 1]))
    reference.backward()
    for ours, theirs in zip(trainer.module.parameters(), generator_before.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_md_gan_and_avg_output_rules_differ():
    logits = torch.tensor([[3.0, -2.0], [-4.0, 1.0]])
    assert float(generator_loss(logits)) != pytest.approx(float(mean_of_generator_losses(logits)))
    one = logits[:1]
    assert float(generator_loss(one)) == pytest.approx(float(mean_of_generator_losses(one)))

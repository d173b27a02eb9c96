"""The literature's baselines: fedgan's averaging, md-gan's swap, local-only's output, and exact resume."""

from __future__ import annotations

import pytest
import torch

from distgan import protocol as p
from distgan.cli import main
from distgan.strategies.averaging import average_states
from distgan.strategies.md_gan import swap_cycle
from distgan.training import train
from tests.conftest import tiny_config
from tests.test_runs import generator_weights, losses, stats
from tests.test_strategies import build_run


# -- fedgan --------------------------------------------------------------------------------------
def test_average_states_weights_floats_and_keeps_integer_buffers_of_the_first():
    first = {"w": torch.tensor([1.0, 2.0]), "running_var": torch.tensor([4.0]),
             "num_batches_tracked": torch.tensor(7)}
    second = {"w": torch.tensor([5.0, -2.0]), "running_var": torch.tensor([0.0]),
              "num_batches_tracked": torch.tensor(9)}
    averaged = average_states([first, second], torch.tensor([0.25, 0.75]))
    assert averaged["w"].tolist() == [4.0, -1.0]
    assert averaged["running_var"].tolist() == [1.0]
    assert averaged["num_batches_tracked"].dtype == torch.int64 and int(averaged["num_batches_tracked"]) == 7
    assert averaged["w"].dtype == torch.float32


def test_average_states_refuses_mismatched_states():
    with pytest.raises(ValueError, match="state 1"):
        average_states([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="weights"):
        average_states([{"a": torch.zeros(1)}], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("weighted", [False, True])
def test_fedgan_round_averages_the_parties_local_models(tmp_path, weighted):
    # Dirichlet shares have unequal sizes, so weighting by data size matters.
    run = build_run(tiny_config("fedgan", split="dirichlet:1", strategy__weighted=weighted), tmp_path)
    sizes = run.strategy.context.party_sizes
    run.round()
    replies = run.replies(p.WeightsReply)
    local = [replies[j] for j in (0, 1)]
    share = torch.tensor([float(sizes[0]), float(sizes[1])]) if weighted else torch.ones(2)
    share = share / share.sum()
    expected_g = average_states([w.generator for w in local], share)  # type: ignore[attr-defined,misc]
    expected_d = average_states([w.discriminator for w in local], share)  # type: ignore[attr-defined,misc]
    for key, value in run.coordinator.trainer.module.state_dict().items():
        torch.testing.assert_close(value, expected_g[key])
    for key, value in run.strategy.global_d.state_dict().items():
        torch.testing.assert_close(value, expected_d[key])
    # Each party's D is its own, not yet the average; the next request brings the averages down.
    assert not torch.equal(run.parties[0].discriminator.state_dict()["layers.0.weight"],
                           expected_d["layers.0.weight"])
    run.log.clear()
    run.round()
    request = run.requests(p.TrainLocalGAN)[1]
    for key, value in expected_g.items():
        torch.testing.assert_close(request.generator[key], value)  # type: ignore[attr-defined,index]


# -- md-gan --------------------------------------------------------------------------------------
def test_swap_cycle_is_a_reproducible_derangement():
    parties = [0, 1, 2, 3, 4]
    plan = swap_cycle(parties, seed=3, round_index=9)
    assert sorted(plan) == parties and sorted(plan.values()) == parties
    assert all(receiver != giver for receiver, giver in plan.items())
    # One cycle: following givers from any party visits all of them.
    seen, party = [], 0
    for _ in parties:
        seen.append(party)
        party = plan[party]
    assert sorted(seen) == parties and party == 0
    assert swap_cycle(parties, seed=3, round_index=9) == plan
    assert swap_cycle([2], seed=3, round_index=9) == {}


def test_md_gan_swap_round_hands_each_party_another_partys_d(tmp_path):
    run = build_run(tiny_config("md-gan", parties=3, strategy__swap_every=2), tmp_path)
    run.round()
    assert not run.requests(p.ExportDiscriminator) and not run.requests(p.ImportDiscriminator)
    run.round()  # round index 1: (1 + 1) % 2 == 0, so the parties swap after training
    exported = run.replies(p.WeightsReply)
    assert sorted(exported) == [0, 1, 2]
    plan = swap_cycle([0, 1, 2], seed=0, round_index=1)
    for receiver, giver in plan.items():
        held = run.parties[receiver].discriminator.state_dict()
        former = exported[giver].discriminator  # type: ignore[attr-defined]
        assert all(torch.equal(held[key], former[key]) for key in held), f"party {receiver} lacks D of {giver}"
        assert not torch.equal(held["layers.0.weight"], exported[receiver].discriminator["layers.0.weight"])  # type: ignore[attr-defined]



def test_md_gan_per_epoch_swap_comes_once_per_pass_over_a_partys_data(tmp_path):
    # fake:n=240 in two iid halves of 120, batch 8: an epoch is 15 rounds.
    run = build_run(tiny_config("md-gan", rounds=30, strategy__swap_per_epoch=True), tmp_path)
    assert run.strategy.swap_interval() == 15
    swapped_after = []
    for index in range(16):
        run.log.clear()
        run.round()
        if run.requests(p.ExportDiscriminator):
            swapped_after.append(index + 1)
    assert swapped_after == [15]

# -- local-only ----------------------------------------------------------------------------------
def test_local_only_outputs_party_zeros_generator_and_shares_nothing(tmp_path):
    run = build_run(tiny_config("local-only"), tmp_path)
    run.round()
    requests = run.requests(p.TrainLocalGAN)
    assert all(r.generator is None and r.discriminator is None for r in requests.values())  # type: ignore[attr-defined]
    reported = run.replies(p.WeightsReply)[0].generator  # type: ignore[attr-defined]
    sampler = run.strategy.sampling_generator()
    assert sampler is not run.coordinator.trainer.module
    for key, value in sampler.state_dict().items():
        assert torch.equal(value, reported[key])


# -- exact resume of the strategies' own state ------------------------------------------------------
@pytest.mark.parametrize(("name", "extra"), [("server-d", {"strategy__download_fraction": 0.1}),
                                             ("fedgan", {}), ("local-only", {}),
                                             ("md-gan", {"strategy__swap_every": 1})])
def test_resume_equals_uninterrupted_run(tmp_path, name, extra):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for folder in (whole, split):
        folder.mkdir()
    options = {"output__checkpoint_every": 2, "output__sample_every": 4, **extra}
    train(tiny_config(name, rounds=4, **options), whole, quiet=True)
    train(tiny_config(name, rounds=2, **options), split, quiet=True)
    assert main(["train", "--resume", str(split), "--rounds", "4", "--quiet"]) == 0
    assert losses(stats(whole)) == losses(stats(split))
    assert torch.equal(generator_weights(whole), generator_weights(split))

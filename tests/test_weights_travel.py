"""Messages whose size does not grow with the work: G's weights travel instead of batches.

round-robin with ``strategy.switch=epoch`` (the paper's Alg. 3 as written) must be exactly the
per-epoch GAN loop run in one process; server-d with ``strategy.fakes=party`` must do the same work
per party as its batch variant. Both messages keep their size whatever the amount of work.
"""

from __future__ import annotations

import math

import pytest
import torch

from distgan import protocol as p
from distgan.assembly import make_factory, plan_data
from distgan.config import Config
from distgan.losses import discriminator_loss, generator_loss
from distgan.parties import ModelReference, check_reply
from distgan.party import adam, build_discriminator, build_generator, to_unit_range
from distgan.privacy.accounting import make_plan
from distgan.seeding import draw_seed, make_generator, seeded
from distgan.training import train
from tests.conftest import tiny_config
from tests.test_runs import losses, stats
from tests.test_strategies import build_run, flat


def epoch_config(**sections: object) -> Config:
    return tiny_config("round-robin", strategy__switch="epoch", **sections)


def reference_per_epoch_loop(config: Config, rounds: int) -> tuple[torch.nn.Module, list[torch.nn.Module],
                                                                  list[float]]:
    """Alg. 3 in one process, nothing distributed: for each epoch, for each party j in turn, one pass
    of the usual GAN loop (a D_j step on a real batch vs G(z), then a G step against D_j) over j's data.
    Random streams as a distgan run has them: G's and D's initial weights from the run seed, each
    party's latents and real batches from its own stream, its dropout from a seed drawn per visit."""
    plan = plan_data(config)
    factory = make_factory(config, plan)
    seed, train_config = config.runtime.seed, config.train
    generator = build_generator(factory, seed)
    g_optimizer = adam(generator, train_config.lr_g, train_config)
    parties = range(config.data.parties)
    discriminators = [build_discriminator(factory, seed) for _ in parties]
    d_optimizers = [adam(d, train_config.lr_d, train_config) for d in discriminators]
    streams = [make_generator(seed, "party", j) for j in parties]
    shares = [plan.data.subset(plan.shares.indices[j]).images for j in parties]
    batch, g_losses = train_config.batch_size, []
    for _ in range(rounds):
        for j in parties:
            with seeded(draw_seed(streams[j])):
                for _ in range(math.ceil(len(shares[j]) / batch)):
                    fake = generator(torch.randn(batch, factory.latent_dim, generator=streams[j]))
                    real = to_unit_range(shares[j][torch.randint(len(shares[j]), (batch,), generator=streams[j])])
                    d_loss = discriminator_loss(discriminators[j](real), discriminators[j](fake.detach()))
                    d_optimizers[j].zero_grad()
                    d_loss.backward()
                    d_optimizers[j].step()
                    g_loss = generator_loss(discriminators[j](fake))
                    g_optimizer.zero_grad()
                    g_loss.backward()
                    g_optimizer.step()
                    g_losses.append(float(g_loss.detach()))
    return generator, discriminators, g_losses


def test_weights_travelling_round_robin_equals_the_per_epoch_loop_in_one_process(tmp_path):
    config = epoch_config(rounds=2, data__source="fake:n=200")  # 100 samples, batch 8: 13 steps a visit
    run = build_run(config, tmp_path)
    g_losses = []
    for _ in range(2):
        run.round()
        g_losses.append(run.log[-1][2])
    generator, discriminators, reference_losses = reference_per_epoch_loop(config, rounds=2)
    assert torch.equal(flat(run.coordinator.trainer.module), flat(generator))
    for party, discriminator in zip(run.parties, discriminators):
        assert torch.equal(flat(party.discriminator), flat(discriminator))
    replies = [reply for _, _, reply in run.log]
    assert [r.g_steps for r in replies] == [13, 13, 13, 13]  # type: ignore[attr-defined]
    visit_means = [sum(reference_losses[i:i + 13]) / 13 for i in range(0, 52, 13)]
    assert [r.g_loss for r in replies] == pytest.approx(visit_means, rel=1e-6)  # type: ignore[attr-defined]


def test_parties_are_visited_in_order_once_per_round_with_g_and_its_adam_state(tmp_path):
    run = build_run(epoch_config(), tmp_path)
    run.round()
    run.round()
    assert [(party, request.kind) for party, request, _ in run.log] == [(0, "train.generator_epoch"),
                                                                        (1, "train.generator_epoch")] * 2
    first, second = run.log[0][1], run.log[1][1]
    assert first.optimizer == {}  # type: ignore[attr-defined]  # G has not stepped yet: a fresh Adam
    # G arrives at party 1 as party 0 sent it back: weights and Adam state after party 0's epoch.
    sent_back = run.log[0][2]
    for key, tensor in sent_back.generator.items():  # type: ignore[attr-defined]
        assert torch.equal(second.generator[key], tensor)  # type: ignore[attr-defined]
    assert int(second.optimizer["0/step"]) == 15  # type: ignore[attr-defined]  # 120 samples / batch 8
    assert run.coordinator.trainer.average_clock == 4 * 15  # G's average ticks once per G step
    adam_steps = [int(next(iter(party.d_optimizer.state.values()))["step"]) for party in run.parties]
    assert adam_steps == [30, 30]


def test_message_size_depends_on_the_model_not_on_the_epoch_length(tmp_path):
    sizes = {}
    for samples in (160, 640):
        run = build_run(epoch_config(data__source=f"fake:n={samples}"), tmp_path / str(samples))
        run.round()
        _, request, reply = run.log[-1]
        assert reply.g_steps == samples // 2 // 8  # type: ignore[attr-defined]
        sizes[samples] = (request.nbytes(), reply.nbytes())
    assert sizes[160] == sizes[640]


@pytest.mark.parametrize("fakes", ["coordinator", "party"])
def test_server_d_variants_do_the_same_work_per_party(tmp_path, fakes):
    """Per party and round: one request, local_steps D steps, one upload of theta_u of D; G steps on the platform."""
    config = tiny_config("server-d", rounds=2, train__local_steps=3, strategy__fakes=fakes)
    run = build_run(config, tmp_path)
    run.round()
    run.round()
    assert [party for party, _, _ in run.log] == [0, 1, 0, 1]
    replies = [reply for _, _, reply in run.log]
    assert all(isinstance(r, p.DeltaUpload) for r in replies)
    size = flat(run.parties[0].discriminator).numel()
    assert [r.stats.steps for r in replies] == [3] * 4  # type: ignore[attr-defined]
    assert [len(r.indices) for r in replies] == [math.ceil(0.1 * size)] * 4  # type: ignore[attr-defined]
    adam_steps = [int(next(iter(party.d_optimizer.state.values()))["step"]) for party in run.parties]
    assert adam_steps == [6, 6]
    assert int(next(iter(run.coordinator.trainer.optimizer.state.values()))["step"]) == 6
    kind = "train.generate_upload" if fakes == "party" else "train.upload"
    assert {request.kind for _, request, _ in run.log} == {kind}


def test_server_d_with_g_weights_sends_the_same_bytes_for_any_local_steps(tmp_path):
    sizes = []
    for steps in (1, 4):
        run = build_run(tiny_config("server-d", train__local_steps=steps, strategy__fakes="party"),
                        tmp_path / str(steps))
        run.round()
        sizes.append(run.log[0][1].nbytes())
    assert sizes[0] == sizes[1]


def test_travelling_round_robin_resumes_exactly(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for folder in (whole, split):
        folder.mkdir()
    uninterrupted = train(epoch_config(rounds=4), whole, quiet=True)
    train(epoch_config(rounds=2), split, quiet=True)
    resumed = train(epoch_config(rounds=4), split, resume=True, quiet=True)
    assert losses(stats(whole)) == losses(stats(split))
    assert torch.equal(flat(uninterrupted.trainer.output_module), flat(resumed.trainer.output_module))
    assert resumed.trainer.average_clock == 4 * 2 * 15


@pytest.mark.parametrize(("sections", "field"), [
    ({"strategy__name": "avg-output", "strategy__switch": "epoch"}, "strategy.switch"),
    ({"strategy__switch": "epoch", "train__local_steps": 2}, "train.local_steps"),
    ({"strategy__fakes": "party"}, "strategy.fakes"),
    ({"strategy__switch": "hourly"}, "strategy.switch"),
])
def test_variants_outside_their_strategy_are_refused(sections, field):
    config = tiny_config()
    raw = config.to_dict()
    for dotted, value in sections.items():
        section, name = dotted.split("__")
        raw[section][name] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Config.from_dict(raw)


def test_malformed_travelling_messages_are_refused(tmp_path):
    run = build_run(epoch_config(), tmp_path)
    expect = run.handle.expectations
    with pytest.raises(p.ProtocolError, match="no generator weights"):
        p.TrainGeneratorEpoch({}, {}).validate("coordinator", expect)
    generator, _ = run.coordinator.trainer.travelling_state()
    with pytest.raises(p.ProtocolError, match="optimizer has entry 'x/momentum'"):
        p.TrainGeneratorEpoch(generator, {"x/momentum": torch.zeros(1)}).validate("coordinator", expect)
    wrong = {key: torch.zeros(3) if key.endswith("weight") else value for key, value in generator.items()}
    with pytest.raises(p.ProtocolError, match="does not fit the run's G"):
        run.parties[0].handle(p.TrainGeneratorEpoch(wrong, {}))
    run.round()
    reply = run.log[0][2]
    assert isinstance(reply, p.GeneratorReply)
    models = run.handle.models
    assert isinstance(models, ModelReference)
    check_reply("party 0", run.log[0][1], reply, models)  # a good reply passes
    bad_state = dict(reply.optimizer, **{"0/exp_avg": torch.zeros(2, 2)})
    with pytest.raises(p.ProtocolError, match="optimizer/0/exp_avg"):
        check_reply("party 0", run.log[0][1], p.GeneratorReply(reply.stats, reply.generator, bad_state, 0.0, 1),
                    models)
    with pytest.raises(p.ProtocolError, match="names no parameter"):
        check_reply("party 0", run.log[0][1], p.GeneratorReply(reply.stats, reply.generator,
                                                               {"99/step": torch.tensor(1.0)}, 0.0, 1), models)


def test_dp_sgd_plans_one_epoch_of_steps_per_round():
    config = epoch_config(rounds=5, train__d_steps=2)
    config.privacy.epsilon = 50.0
    plan = make_plan(config, "dp-sgd", samples=120)
    assert plan.planned_steps == 5 * 15 * 2
    per_batch = tiny_config(rounds=5, train__d_steps=2)
    per_batch.privacy.epsilon = 50.0
    assert make_plan(per_batch, "dp-sgd", samples=120).planned_steps == 5 * 2


def test_sanitizer_refuses_the_travelling_generator(tmp_path):
    config = epoch_config()
    config.privacy.epsilon, config.privacy.mechanism = 50.0, "gradient-sanitizer"
    with pytest.raises(ValueError, match="does not cover strategy"):
        train(config, tmp_path, quiet=True)


def test_travelling_round_robin_on_workers_equals_in_process(tmp_path):
    """G and its Adam state cross the worker pipes (one buffer per message) and come back the same."""
    runs = {}
    for workers in (0, 2):
        run_dir = tmp_path / f"w{workers}"
        run_dir.mkdir()
        runs[workers] = train(epoch_config(rounds=2, runtime__workers=workers), run_dir, quiet=True)
    assert losses(stats(tmp_path / "w0")) == losses(stats(tmp_path / "w2"))
    assert torch.equal(flat(runs[0].trainer.output_module), flat(runs[2].trainer.output_module))

"""Differential privacy per party: accounting against Opacus, clipping, the release filter, budgets."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from opacus.accountants import RDPAccountant
from torch import nn

from distgan import protocol as p
from distgan.config import Config, ModelConfig, PrivacyConfig
from distgan.data.sources import make_fake
from distgan.losses import generator_input_gradient, generator_loss, mean_of_generator_losses
from distgan.privacy.accounting import PrivacyLedger, PrivacyPlan, counts_release, make_plan
from distgan.privacy.mechanisms import (
    DPSGDDiscriminator,
    GradientSanitizer,
    PrivacyViolation,
    build_party_privacy,
)
from distgan.training import train


def plan(mechanism: str = "dp-sgd", sigma: float = 1.0, rate: float = 0.1, clip: float = 1.0,
         budget: float | None = None, per_step: int = 1) -> PrivacyPlan:
    return PrivacyPlan(mechanism, sigma, rate, 1e-5, clip, budget, 0, per_step)


# -- accounting ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sigma", "rate", "steps"), [(1.1, 0.01, 1000), (0.8, 0.25, 37), (50.0, 1.0, 640)])
def test_ledger_epsilon_equals_opacus_rdp_accountant(sigma: float, rate: float, steps: int) -> None:
    ledger = PrivacyLedger(plan(sigma=sigma, rate=rate))
    ledger.spend(steps)
    reference = RDPAccountant()
    for _ in range(steps):
        reference.step(noise_multiplier=sigma, sample_rate=rate)
    assert ledger.epsilon == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    assert ledger.epsilon_after(5) > ledger.epsilon


def test_noise_from_target_epsilon_reaches_it_over_the_planned_steps(make_config) -> None:
    config = make_config("avg-output", rounds=40, privacy__epsilon=3.0)
    made = make_plan(config, "dp-sgd", samples=120)
    assert made.sample_rate == pytest.approx(8 / 120) and made.planned_steps == 40
    reference = RDPAccountant()
    reference.history = [counts_release(config), (made.noise_multiplier, made.sample_rate, made.planned_steps)]
    assert 3.0 - 0.02 <= reference.get_epsilon(delta=made.target_delta) <= 3.0  # the counts' release included
    # The sanitizer's query touches every record: no subsampling, B Gaussian releases per step.
    sanitizer = make_plan(config, "gradient-sanitizer", samples=120)
    assert sanitizer.sample_rate == 1.0 and sanitizer.planned_steps == 40 * 8
    assert sanitizer.noise_multiplier > made.noise_multiplier


def test_every_private_d_step_is_planned_and_spent(make_config, tmp_path) -> None:
    """train.d_steps = 3: three DP-SGD steps per G step, so the plan covers and the ledger counts 3x the
    rounds (the sanitizer's releases do not multiply: its D steps touch no released value)."""
    config = make_config("avg-output", rounds=4, privacy__epsilon=3.0, train__d_steps=3)
    made = make_plan(config, "dp-sgd", samples=120)
    assert made.planned_steps == 4 * 3
    assert made.noise_multiplier == pytest.approx(make_plan(make_config("avg-output", rounds=12, privacy__epsilon=3.0),
                                                            "dp-sgd", samples=120).noise_multiplier)
    assert make_plan(config, "gradient-sanitizer", samples=120).planned_steps == 4 * 8
    train(config, tmp_path, quiet=True)
    last = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])
    # The party planned with its published (noisy) count, around the release of its counts.
    published = json.loads((tmp_path / "parties.json").read_text())["0"]["samples"]
    spent = make_plan(config, "dp-sgd", samples=published)
    reference = RDPAccountant()
    reference.history = [counts_release(config), (spent.noise_multiplier, spent.sample_rate, 4 * 3)]
    assert last["parties"]["0"]["epsilon"] == pytest.approx(reference.get_epsilon(delta=spent.target_delta))


def test_default_delta_and_unaffordable_budget(make_config) -> None:
    assert make_plan(make_config(privacy__epsilon=1.0), "dp-sgd", samples=50).target_delta == pytest.approx(1e-5)
    assert make_plan(make_config(privacy__epsilon=1.0), "dp-sgd", samples=10).target_delta == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="one round alone costs epsilon"):
        make_plan(make_config(privacy__epsilon=0.01, privacy__noise_multiplier=0.5), "dp-sgd", samples=120)


def test_config_rejects_batch_norm_under_dp_and_bad_ranges() -> None:
    with pytest.raises(ValueError, match="model.norm"):
        Config(model=ModelConfig(name="dcgan", norm="batch"), privacy=PrivacyConfig(epsilon=10.0))
    Config(model=ModelConfig(name="dcgan", norm="group"), privacy=PrivacyConfig(epsilon=10.0))
    for bad in ({"epsilon": -1.0}, {"delta": 1.5}, {"max_grad_norm": 0.0}, {"noise_multiplier": float("nan")},
                {"mechanism": "laplace"}):
        with pytest.raises(ValueError, match="privacy."):
            PrivacyConfig(**bad)  # type: ignore[arg-type]


def test_sanitizer_is_refused_for_strategies_that_send_weights(make_config) -> None:
    config = make_config("fedgan", privacy__epsilon=5.0, privacy__mechanism="gradient-sanitizer")
    with pytest.raises(ValueError, match="does not cover strategy 'fedgan'"):
        build_party_privacy(config, 0, make_fake(n=100, channels=1, size=4, classes=2), 2)


# -- clipping ------------------------------------------------------------------------------------------
def tiny_discriminator() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1), nn.Flatten(0))


def mean_clipped_gradient(discriminator: nn.Module, images: torch.Tensor, sign: float, clip: float) \
        -> tuple[list[torch.Tensor], list[float]]:
    """Per-sample gradients of softplus(sign * D(x)) by hand, one sample at a time, clipped and averaged."""
    params = list(discriminator.parameters())
    total = [torch.zeros_like(param) for param in params]
    norms = []
    for image in images:
        grads = torch.autograd.grad(F.softplus(sign * discriminator(image[None])).sum(), params)
        norm = float(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
        norms.append(norm)
        for accumulated, g in zip(total, grads):
            accumulated += g * min(1.0, clip / (norm + 1e-6)) / len(images)
    return total, norms


def test_dp_sgd_clips_every_per_sample_gradient() -> None:
    data = make_fake(n=6, channels=1, size=4, classes=2)
    discriminator = tiny_discriminator()
    clip = 0.01  # far below these gradients' norms, so every sample is clipped
    engine = DPSGDDiscriminator(plan(sigma=1e-9, rate=1.0, clip=clip), party_id=0, secret_seed=1)
    engine.attach(discriminator, torch.optim.SGD(discriminator.parameters(), lr=1.0), data, torch.device("cpu"))
    fake = torch.rand(1, 4, 1, 4, 4) * 2 - 1
    before = [param.detach().clone() for param in discriminator.parameters()]
    real_part, real_norms = mean_clipped_gradient(discriminator, data.images.float() / 127.5 - 1, -1.0, clip)
    fake_part, fake_norms = mean_clipped_gradient(discriminator, fake[0], 1.0, clip)
    stats = engine.discriminator_steps(fake)  # rate 1: every record is in the batch; sigma ~ 0: no noise
    assert min(real_norms + fake_norms) > 10 * clip
    for old, new, real_gradient, fake_gradient in zip(before, discriminator.parameters(), real_part, fake_part):
        torch.testing.assert_close(old - new.detach(), real_gradient + fake_gradient, atol=1e-6, rtol=1e-4)
    step = [old - new.detach() for old, new in zip(before, discriminator.parameters())]
    assert math.sqrt(sum(float(part.pow(2).sum()) for part in step)) <= 2 * clip * (1 + 1e-4)
    assert stats.steps == 1 and stats.d_real == 0.0 and stats.d_loss == 0.0 and stats.epsilon > 0


def test_sanitizer_bounds_every_released_gradient_and_feeds_g_their_mean() -> None:
    sanitizer = GradientSanitizer(plan("gradient-sanitizer", sigma=1e-9, rate=1.0, clip=0.5, per_step=4),
                                  party_id=0, secret_seed=2)
    logits = torch.randn(2, 4)
    logit_gradients = torch.randn(2, 4, 1, 3, 3) * 10
    released = sanitizer.sanitize(logits, logit_gradients)
    assert float(released.flatten(2).norm(dim=2).max()) <= 0.5 * (1 + 1e-5)
    reply = sanitizer.release(p.Feedback(p.DiscriminatorStats(d_loss=1.0, d_real=0.7, d_fake=0.3, steps=2),
                                         logits, logit_gradients.float()))
    assert isinstance(reply, p.Feedback)
    assert torch.equal(reply.logits, torch.zeros_like(logits))
    assert reply.stats.d_real == reply.stats.d_fake == reply.stats.d_loss == 0.0 and reply.stats.epsilon > 0
    # Whatever the G loss, the platform's chain rule turns the release into the mean of the sanitized
    # gradients of each party's own loss: (1/B) * g_b for one party.
    for loss in (generator_loss, mean_of_generator_losses):
        _, image_gradient = generator_input_gradient(reply.logits[None, 0], reply.input_gradients[None, 0],
                                                     None, loss)
        torch.testing.assert_close(image_gradient, released[0] / 4, atol=1e-5, rtol=1e-4)


def test_release_filter_withholds_what_its_mechanism_does_not_cover() -> None:
    sanitizer = GradientSanitizer(plan("gradient-sanitizer", per_step=8), party_id=3, secret_seed=0)
    weights = p.WeightsReply(p.DiscriminatorStats(), discriminator={"w": torch.zeros(2)})
    with pytest.raises(PrivacyViolation, match="party 3.*must not leave"):
        sanitizer.release(weights)
    engine = DPSGDDiscriminator(plan(), party_id=1, secret_seed=0)
    released = engine.release(weights)
    assert isinstance(released, p.WeightsReply) and released.stats.d_real == 0.0
    description = p.Description(samples=5, label_counts=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(PrivacyViolation, match="exact counts are withheld"):
        engine.release(description)  # a party that published no noisy counts publishes none

    with pytest.raises(TypeError, match="must state reveals"):  # a reply that does not say what it reveals

        class Unknown(p.Message):
            kind = "reply.unknown"
            direction = "up"

    with pytest.raises(PrivacyViolation, match="train.save_state"):
        engine.release(p.SaveState(1))  # not a reply: nothing of it is released


def test_a_checkpoint_holds_no_ledger_and_no_random_state_and_a_load_reseeds() -> None:
    """The ledger lives in the party's journal (tests/test_privacy_holes.py); a checkpoint holds only the
    mechanism's name, and loading one draws fresh OS entropy for the noise and the sampling."""
    data = make_fake(n=8, channels=1, size=4, classes=2)
    discriminator = tiny_discriminator()
    engine = DPSGDDiscriminator(plan(rate=0.5), party_id=0, secret_seed=5)
    engine.attach(discriminator, torch.optim.Adam(discriminator.parameters()), data, torch.device("cpu"))
    engine.discriminator_steps(torch.rand(3, 2, 1, 4, 4))
    tensors, meta = engine.state()
    assert tensors == {} and meta == {"mechanism": "dp-sgd"}
    spent, noise, sampling = engine.ledger.epsilon, engine._noise_rng.get_state(), engine._sampling_rng.get_state()
    engine.load_state(tensors, meta)
    assert engine.ledger.epsilon == spent > 0
    assert not torch.equal(engine._noise_rng.get_state(), noise)
    assert not torch.equal(engine._sampling_rng.get_state(), sampling)
    with pytest.raises(ValueError, match="privacy mechanism 'gradient-sanitizer'"):
        engine.load_state({}, {"mechanism": "gradient-sanitizer"})


# -- whole runs ------------------------------------------------------------------------------------------
def _steps_affordable(history_before: list[tuple[float, float, int]], sigma: float, rate: float,
                      budget: float, delta: float) -> int:
    """How many D steps at (sigma, rate) fit in ``budget`` after ``history_before`` (Opacus's accountant)."""
    steps = 0
    while True:
        accountant = RDPAccountant()
        accountant.history = [*history_before, (sigma, rate, steps + 1)]
        if accountant.get_epsilon(delta=delta) > budget:
            return steps
        steps += 1


def test_dp_run_reports_increasing_epsilon_and_stops_cleanly_at_its_budget(make_config, tmp_path) -> None:
    sigma, rate, count_noise, delta = 1.0, 8 / 120, 2.0, 1e-5
    config = make_config("avg-output", rounds=30, privacy__noise_multiplier=sigma,
                         privacy__count_noise=count_noise)
    reference = RDPAccountant()
    reference.history = [counts_release(config), (sigma, rate, 8)]
    budget = reference.get_epsilon(delta=delta) + 1e-6  # about 8 D steps at the exact count of 120
    config.privacy.epsilon = budget
    train(config, tmp_path, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    epsilons = [record["parties"]["0"]["epsilon"] for record in records]
    assert all(math.isfinite(e) for e in epsilons)
    assert all(b > a for a, b in itertools.pairwise(epsilons))
    # Each party's sample rate is batch / its *published* count (120 plus noise of standard deviation
    # 2 * sqrt(10 labels), drawn with OS entropy), so the run stops after exactly the steps the party
    # with the fewest affordable ones can pay for, counted from the counts it published.
    published = json.loads((tmp_path / "parties.json").read_text())
    affordable = min(_steps_affordable([counts_release(config)], sigma, 8 / published[party]["samples"], budget, delta)
                     for party in ("0", "1"))
    assert len(records) == affordable < config.train.rounds and epsilons[-1] <= budget
    log = (tmp_path / "log.txt").read_text()
    assert f"stopping after round {len(records)} of 30: privacy budget of party" in log
    assert (tmp_path / "checkpoints" / f"round-{len(records):07d}.json").is_file()
    assert (tmp_path / "samples" / f"round-{len(records):07d}.png").is_file()


def test_resume_continues_the_privacy_ledger_and_a_spent_budget_stays_spent(make_config, tmp_path) -> None:
    """Epsilon depends only on the steps taken, so a resumed run reports what an uninterrupted one does."""
    def epsilons(run_dir) -> list[float]:
        lines = (run_dir / "stats.jsonl").read_text().splitlines()
        return [json.loads(line)["parties"]["1"]["epsilon"] for line in lines]

    config = make_config("round-robin", rounds=6, privacy__epsilon=30.0)  # checkpoints at rounds 3 and 6
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config, whole, quiet=True)
    shutil.copytree(whole, split)
    for path in (split / "checkpoints").glob("round-0000006.*"):
        path.unlink()  # as if the run had died after round 5: resume from round 3
    train(config, split, resume=True, quiet=True)
    assert len(epsilons(whole)) == 6 and 29.5 < epsilons(whole)[-1] <= 30.0
    assert epsilons(split) == pytest.approx(epsilons(whole), rel=1e-12)
    # Asking a finished run for more rounds cannot buy more privacy: it ends at once, cleanly.
    config.train.rounds = 9
    train(config, whole, resume=True, quiet=True)
    assert len(epsilons(whole)) == 6
    assert "not running round 7: privacy budget of party" in (whole / "log.txt").read_text()

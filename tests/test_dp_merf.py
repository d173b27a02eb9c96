"""dp-merf: the release-once strategy, its Gaussian release, the cached reply and the label-conditional G.

Prepare a party (or a tiny run on ``fake`` data), execute the release or the run, assert what the
privacy analysis and the users rely on: one unit-norm vector per record, epsilon of exactly one
Gaussian mechanism, a repeat that changes nothing, samples that carry the labels asked for.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distgan import protocol as p
from distgan.assembly import build_party, plan_data
from distgan.cli import main as cli_main
from distgan.config import Config, StrategyConfig
from distgan.models.conditional import LabelConditionalGenerator, generated_labels
from distgan.privacy.accounting import PrivacyBudgetExhausted
from distgan.privacy.mechanisms import MeanEmbeddingRelease, PrivacyViolation, resolve_mechanism
from distgan.privacy.random_features import RandomFeatures, embed_images, label_embedding, sensitivity
from distgan.sampling import load_generator
from distgan.training import train
from tests.conftest import tiny_config

FEATURES = 64


def dp_merf_config(epsilon: float | None = 2.0, **sections: object):
    config = tiny_config("dp-merf", rounds=4, **{"strategy__random_features": FEATURES, **sections})
    config.privacy.epsilon = epsilon
    return config


def private_party(tmp_path, epsilon: float = 2.0, party_id: int = 0):
    config = dp_merf_config(epsilon)
    return build_party(config, plan_data(config), party_id, tmp_path)


def release_request(seed: int = 7) -> p.ReleaseEmbedding:
    return p.ReleaseEmbedding(feature_seed=seed, features=FEATURES, lengthscale=20.0, num_labels=10)


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """Epsilon of one Gaussian mechanism of noise multiplier sigma from its closed-form RDP
    alpha / (2 sigma^2), converted as Opacus does (Balle et al. 2020), at Opacus's orders."""
    best = math.inf
    for alpha in [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)):
        rdp = alpha / (2 * sigma ** 2)
        eps = rdp - (math.log(delta) + math.log(alpha)) / (alpha - 1) + math.log((alpha - 1) / alpha)
        best = min(best, eps)
    return best


def test_every_record_adds_a_unit_vector_so_one_record_moves_the_sum_by_one():
    feature_map = RandomFeatures(seed=3, features=FEATURES, lengthscale=5.0, inputs=16)
    x = torch.rand(50, 16) * 2 - 1
    labels = torch.arange(50) % 4
    rows = feature_map(x, feature_map.frequencies())
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(50))
    full = label_embedding(rows, labels, 4)
    without_last = label_embedding(rows[:-1], labels[:-1], 4)
    assert math.isclose(float((full - without_last).norm()), sensitivity("add-remove"), rel_tol=1e-5)
    assert sensitivity("replace-one") >= math.sqrt(2)
    assert torch.allclose(full[-1] / 0.3, torch.bincount(labels, minlength=4).float())  # the label counts row


def test_several_kernels_keep_every_record_at_unit_norm_and_approximate_the_mean_kernel():
    # Three kernels in one release: each record's vector still has norm 1 (sensitivity 1, the same
    # noise), each kernel owns its share of the frequencies, and phi(x).phi(x') approximates the mean
    # of the three Gaussian kernels.
    lengthscales = (5.0, 2.0, 1.0)
    feature_map = RandomFeatures(seed=3, features=6000, lengthscale=lengthscales[0], inputs=16,
                                 extra_lengthscales=lengthscales[1:])
    x = (torch.rand(50, 16) * 2 - 1) * 0.5
    labels = torch.arange(50) % 4
    frequencies = feature_map.frequencies()
    rows = feature_map(x, frequencies)
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(50))
    full = label_embedding(rows, labels, 4)
    assert math.isclose(float((full - label_embedding(rows[:-1], labels[:-1], 4)).norm()), 1.0, rel_tol=1e-5)
    for block, lengthscale in zip(frequencies.split(1000), lengthscales):
        assert math.isclose(float(block.std()), 1 / lengthscale, rel_tol=0.02)
    distances = torch.cdist(x, x) ** 2
    kernel = sum(torch.exp(-distances / (2 * lengthscale ** 2)) for lengthscale in lengthscales) / 3
    approximate = rows[:, :-1] @ rows[:, :-1].T / (1 - 0.3 ** 2)
    assert float((approximate - kernel).abs().max()) < 0.1
    # One kernel: the extra field's default, the same frequencies as before several kernels existed.
    single = RandomFeatures(seed=3, features=64, lengthscale=5.0, inputs=16)
    rng = torch.Generator().manual_seed(3)
    torch.testing.assert_close(single.frequencies(), torch.randn(32, 16, generator=rng) / 5.0, rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least as many frequencies"):
        RandomFeatures(seed=3, features=4, lengthscale=5.0, inputs=16, extra_lengthscales=(2.0, 1.0))


def test_a_bad_kernel_scale_list_is_refused_naming_the_field_and_the_value():
    config = dp_merf_config().with_overrides(["strategy.extra_kernel_scales=0.3,0.15"])
    assert config.strategy.extra_kernel_scales == (0.3, 0.15)
    assert Config.from_dict(config.to_dict()).strategy.extra_kernel_scales == (0.3, 0.15)  # a saved run
    assert StrategyConfig().extra_kernel_scales == ()  # the default: one kernel, as before
    for bad, shown in (("0.3,-1", "'-1'"), ("0.3,abc", "'abc'"), ("0.3,inf", "'inf'")):
        with pytest.raises(ValueError, match=rf"strategy\.extra_kernel_scales=.*got {shown}"):
            dp_merf_config().with_overrides([f"strategy.extra_kernel_scales={bad}"])
    with pytest.raises(ValueError, match=r"strategy\.extra_kernel_scales=\(0\.3, 0\.15\).*per kernel"):
        StrategyConfig(random_features=4, extra_kernel_scales=(0.3, 0.15))
    # On the wire: a malformed entry is a protocol error; a reply for other kernels answers nothing.
    request = p.ReleaseEmbedding(7, FEATURES, 20.0, 10, p.format_lengthscales((8.4, 4.2)))
    assert p.parse_lengthscales(request.extra_lengthscales) == (8.4, 4.2)
    with pytest.raises(p.ProtocolError, match="extra_lengthscales='8.4,-2'"):
        p.ReleaseEmbedding(7, FEATURES, 20.0, 10, "8.4,-2").validate("coordinator", p.Expectations((1, 28, 28), 8, 4))
    reply = p.EmbeddingRelease(torch.zeros(FEATURES + 1, 10), 7, FEATURES, 20.0,
                               extra_lengthscales=request.extra_lengthscales)
    assert reply.answers(request) and not reply.answers(release_request())


def test_a_several_kernel_release_is_cached_and_survives_a_restart(tmp_path):
    party = private_party(tmp_path)
    request = p.ReleaseEmbedding(7, FEATURES, 20.0, 10, p.format_lengthscales((8.0,)))
    first = party.handle(request)
    assert isinstance(first, p.EmbeddingRelease) and first.answers(request)
    tensors, meta = party.state_tensors()
    restarted = private_party(tmp_path)
    restarted.load_state_tensors(tensors, meta)
    assert torch.equal(restarted.handle(request).embedding, first.embedding)
    # The single-kernel request with the same seed is another feature map: another release, refused.
    with pytest.raises(PrivacyBudgetExhausted):
        restarted.handle(release_request())


def test_the_release_spends_exactly_one_gaussian_mechanism(tmp_path):
    party = private_party(tmp_path, epsilon=2.0)
    engine = party.privacy
    assert isinstance(engine, MeanEmbeddingRelease) and engine.plan.sample_rate == 1.0
    reply = party.handle(release_request())
    assert isinstance(reply, p.EmbeddingRelease)
    sigma, delta = engine.plan.noise_multiplier, engine.plan.target_delta
    # The ledger holds the party's noisy counts (its Description, one Gaussian at privacy.count_noise,
    # docs/PRIVACY.md) and the release: two Gaussian mechanisms, composed. Its epsilon is the target
    # (the noise search stops within 0.01 below it) and equals the closed-form epsilon of their
    # composition: RDP alpha / (2 sigma^2) adds, so one Gaussian of 1/sigma_eff^2 = sum of 1/sigma^2.
    counts_sigma = engine.plan.prior[0][0]
    assert engine.ledger.steps == 2 and engine.ledger.accountant.history[0] == (counts_sigma, 1.0, 1)
    assert 1.99 - 1e-9 <= engine.ledger.epsilon <= 2.0
    assert math.isclose(reply.epsilon, engine.ledger.epsilon)
    sigma_eff = (sigma ** -2 + counts_sigma ** -2) ** -0.5
    assert math.isclose(reply.epsilon, gaussian_epsilon(sigma_eff, delta), rel_tol=1e-3)
    # The noise actually added has standard deviation sigma * sensitivity (= sigma under add/remove).
    data = party._data
    exact = embed_images(data.images, data.labels, RandomFeatures(7, FEATURES, 20.0, 784), 10)
    noise = reply.embedding.double() - exact.double()
    assert math.isclose(float(noise.std()), sigma, rel_tol=0.1)


def test_a_repeated_request_gets_the_identical_reply_and_the_ledger_does_not_move(tmp_path):
    party = private_party(tmp_path)
    first = party.handle(release_request())
    spent, steps = party.privacy.ledger.epsilon, party.privacy.ledger.steps
    second = party.handle(release_request())
    assert torch.equal(first.embedding, second.embedding) and first.epsilon == second.epsilon
    assert (party.privacy.ledger.epsilon, party.privacy.ledger.steps) == (spent, steps)
    # A restarted party (its state carried over, as Flower deployment and checkpoints do; its ledger
    # from its journal in the same folder) answers the same.
    tensors, meta = party.state_tensors()
    restarted = private_party(tmp_path)
    restarted.load_state_tensors(tensors, meta)
    third = restarted.handle(release_request())
    assert torch.equal(first.embedding, third.embedding)
    assert restarted.privacy.ledger.steps == steps
    # Another feature map is another release: it would spend again, over the budget, so it is refused.
    with pytest.raises(PrivacyBudgetExhausted):
        restarted.handle(release_request(seed=8))


def test_the_mean_embedding_party_releases_nothing_else(tmp_path):
    party = private_party(tmp_path)
    with pytest.raises(PrivacyViolation):
        party.handle(p.TrainDiscriminator(torch.zeros(1, 8, 1, 28, 28), feedback=True))
    with pytest.raises(PrivacyViolation):
        party.handle(p.ExportDiscriminator())
    # ... and a DP-SGD party refuses to release an embedding, which its mechanism does not cover.
    config = tiny_config("round-robin")
    config.privacy.epsilon = 5.0
    dp_sgd_party = build_party(config, plan_data(config), 0, tmp_path / "sgd")
    with pytest.raises(PrivacyViolation, match="does not cover"):
        dp_sgd_party.handle(release_request())


def test_mechanism_and_strategy_must_match():
    config = dp_merf_config()
    assert resolve_mechanism(config) == "mean-embedding"
    config.privacy.mechanism = "dp-sgd"
    with pytest.raises(ValueError, match="does not cover strategy 'dp-merf'"):
        resolve_mechanism(config)
    other = tiny_config("avg-output")
    other.privacy.epsilon, other.privacy.mechanism = 1.0, "mean-embedding"
    with pytest.raises(ValueError, match="mean-embedding"):
        resolve_mechanism(other)


def test_the_release_reply_must_answer_its_request():
    request = release_request()
    reply = p.EmbeddingRelease(torch.zeros(FEATURES + 1, 10), 7, FEATURES, 20.0)
    assert reply.answers(request)
    assert not p.EmbeddingRelease(torch.zeros(FEATURES + 1, 9), 7, FEATURES, 20.0).answers(request)
    with pytest.raises(p.ProtocolError, match="expected"):
        p.EmbeddingRelease(torch.zeros(FEATURES, 10), 7, FEATURES, 20.0).validate("party 0", p.Expectations(
            (1, 28, 28), 8, 4))
    with pytest.raises(p.ProtocolError, match="must be even"):
        p.ReleaseEmbedding(7, 63, 20.0, 10).validate("coordinator", p.Expectations((1, 28, 28), 8, 4))


def test_a_tiny_private_run_trains_a_conditional_generator_whose_samples_carry_their_labels(tmp_path):
    # The fake classes differ in a small block: a narrower kernel and more features than the defaults resolve it.
    config = dp_merf_config(epsilon=None, train__rounds=150, train__batch_size=40, train__lr_g=3e-3,
                            strategy__random_features=256, strategy__kernel_scale=0.3)
    run = train(config, tmp_path / "run", quiet=True)
    records = [line for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert len(records) == 150
    generator, _, _ = load_generator(tmp_path / "run")
    assert isinstance(generator, LabelConditionalGenerator)
    # fake data: class k is a bright square at a class-specific place; the sample made for label k
    # must have its brightest block where class k's is (nearest class mean of the real data).
    data = plan_data(config).data
    means = torch.stack([data.images[data.labels == k].float().mean(0).flatten() for k in range(10)])
    asked = torch.arange(10).repeat_interleave(20)
    with torch.no_grad():
        images = generator(torch.randn(len(asked), config.model.latent_dim,
                                       generator=torch.Generator().manual_seed(0)), asked)
    pixels = (images.flatten(1) + 1) * 127.5
    nearest = torch.cdist(pixels, means).argmin(1)
    assert float((nearest == asked).double().mean()) >= 0.7  # chance: 0.1
    # The labels G(z) draws by itself follow the released label weights and come with every sample.
    latents = torch.randn(500, config.model.latent_dim)
    drawn = generated_labels(generator, latents)
    assert drawn is not None and set(drawn.tolist()) == set(range(10))
    assert run.strategy.released is not None


def test_a_private_run_spends_one_release_and_distgan_sample_writes_the_labels(tmp_path):
    config = dp_merf_config(epsilon=3.0)
    train(config, tmp_path / "run", quiet=True)
    import json

    records = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert len(records) == 4  # the budget monitor does not stop a release-once run after its release
    assert {j: round(s["epsilon"], 2) for j, s in records[0]["parties"].items()} == {"0": 3.0, "1": 3.0}
    assert all(not record["parties"] and record["bytes_up"] == 0 for record in records[1:])
    out = tmp_path / "samples.npz"
    assert cli_main(["sample", str(tmp_path / "run"), "--n", "50", "--out", str(out)]) == 0
    arrays = np.load(out)
    assert arrays["images"].shape == (50, 1, 28, 28) and arrays["labels"].shape == (50,)
    assert set(arrays["labels"].tolist()) <= set(range(10))

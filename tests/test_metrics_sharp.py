"""The metrics that see defects: fd-sharp and precision/recall/density/manifold-coverage (issue 12).

Stand-in generators are real digits of the train split with a known defect (``distgan.metrics.
calibration``), compared with the test split as any run's samples are.
"""

from __future__ import annotations

import pytest
import torch

from distgan.metrics import METRICS, EvalContext, EvalSettings, compute_metrics
from distgan.metrics.calibration import add_noise, condition_images, condition_named, gaussian_blur
from distgan.metrics.domains import domain_evaluation
from distgan.metrics.manifold import prdc
from distgan.metrics.reference import digit_split, to_unit_range
from distgan.metrics.sharp import DOMAINS, load_sharp, reference_features

SHARP = ["fd-sharp", "precision", "recall", "density", "manifold-coverage"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    train = digit_split().train
    return to_unit_range(train.images), train.labels


def measure(images: torch.Tensor) -> dict:
    context = EvalContext(lambda count, seed: images, (1, 28, 28), None, EvalSettings(generated=len(images)),
                          evaluation=domain_evaluation("digits"))
    return compute_metrics(context, SHARP)


def condition(name: str, images: torch.Tensor, labels: torch.Tensor, count: int = 1000) -> torch.Tensor:
    return condition_images(condition_named(name), images, labels)[:count]


def test_shipped_sharp_weights_are_small_and_classify_test_digits():
    path = DOMAINS["mnist"].weights_path
    assert path.is_file() and path.stat().st_size < 2_000_000
    features = load_sharp(path)
    assert features(torch.zeros(2, 1, 28, 28)).shape == (2, 128)
    assert reference_features(DOMAINS["mnist"]).shape == (len(digit_split().held_out), 128)


def test_sharp_metrics_are_registered_as_defaults_for_digits():
    from distgan.metrics import default_metrics

    assert set(SHARP) <= set(default_metrics((1, 28, 28), "digits"))
    assert not set(SHARP) & set(default_metrics((3, 64, 64), None))
    assert "coverage" in METRICS and "manifold-coverage" in METRICS  # distinct names, distinct meanings


def test_fd_sharp_orders_real_noise_blur_and_missing_classes(digits):
    images, labels = digits
    names = ["real (train split)", "real + noise σ 0.1", "real + noise σ 0.3", "real, blur σ 0.5 px",
             "real, classes 0-4 only"]
    scores = [measure(condition(name, images, labels))["fd-sharp"] for name in names]
    assert scores == sorted(scores), dict(zip(names, scores))
    assert scores[0] < 15 and scores[-1] > 150


def test_precision_drops_on_noise_images_while_recall_drops_on_one_class(digits):
    images, labels = digits
    real = measure(images[:1000])
    noise = measure(condition("pure noise (uniform)", images, labels))
    one_class = measure(condition("real, class 0 only", images, labels))
    assert real["precision"] > 0.9 and real["recall"] > 0.9
    # Noise images: few samples look real (precision), and the real data is not reproduced either.
    assert noise["precision"] < real["precision"] - 0.1 and noise["density"] < 0.5 * real["density"]
    # One class, all of it real: the samples look real (precision stays), most real digits are missed.
    assert one_class["precision"] > 0.85 and one_class["recall"] < 0.2
    assert one_class["manifold-coverage"] < 0.2 < real["manifold-coverage"]


def test_gaussian_noise_and_blur_lower_recall_not_precision(digits):
    """What the calibration table shows: in a classifier's feature space Gaussian noise up to sigma 0.3
    and blur move real digits inwards (density rises), so recall, not precision, is what drops."""
    images, _ = digits
    real = measure(images[:1000])
    noisy = measure(add_noise(images[:1000], 0.3, torch.Generator().manual_seed(0)))
    blurred = measure(gaussian_blur(images[:1000], 1.0))
    assert noisy["recall"] < real["recall"] - 0.05 and blurred["recall"] < real["recall"] - 0.5
    assert noisy["precision"] > 0.9


def test_prdc_matches_the_definitions_on_a_toy_set():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    fake = torch.tensor([[0.5], [1.5], [10.0], [11.0]], dtype=torch.float64)
    values = prdc(real, fake, k=1)
    # Real radii (1st neighbour) are all 1: 0.5 and 1.5 lie inside, 10 and 11 do not.
    assert values["precision"] == 0.5
    # Fake radii: 1, 1, 1, 1; real points within 1 of a fake: 0, 1, 2 (3 is 1.5 from 1.5).
    assert values["recall"] == 0.75
    # 0.5 lies in the balls of 0 and 1, 1.5 in those of 1 and 2: 4 memberships / (k=1 * 4 fakes).
    assert values["density"] == 1.0
    # Real points with a fake within their radius 1: 0, 1, 2, and 3 (1.5 from 1.5 > 1: no).
    assert values["manifold-coverage"] == 0.75


def test_blur_keeps_range_and_mass():
    images = torch.full((2, 1, 28, 28), -1.0)
    images[:, :, 10:18, 10:18] = 1.0
    blurred = gaussian_blur(images, 1.0)
    assert blurred.shape == images.shape and blurred.min() >= -1 and blurred.max() <= 1
    assert torch.allclose(blurred.sum(), images.sum(), rtol=1e-4)

"""The metrics that see defects: fd-sharp and precision/recall/density/manifold-coverage (issue 12).

Stand-in generators are real images (digits, Fashion-MNIST) of the train split with a known defect
(``distgan.metrics.calibration``), compared with the test split as any run's samples are.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from distgan.config import Config, DataConfig
from distgan.data.sources import FASHION_MNIST_DIR
from distgan.metrics import METRICS, EvalContext, EvalSettings, MetricUnavailable, compute_metrics
from distgan.metrics.calibration import add_noise, condition_images, condition_named, gaussian_blur
from distgan.metrics.domains import domain_evaluation, run_domain, run_evaluation
from distgan.metrics.manifold import prdc
from distgan.metrics.reference import digit_split, to_unit_range
from distgan.metrics.sharp import DOMAINS, domain_of, load_sharp, reference_features
from tests.conftest import needs_fashion

SHARP = ["fd-sharp", "precision", "recall", "density", "manifold-coverage"]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    train = digit_split().train
    return to_unit_range(train.images), train.labels


@pytest.fixture(scope="module")
def fashion() -> tuple[torch.Tensor, torch.Tensor]:
    train = DOMAINS["fashion-mnist"].train_split()
    return to_unit_range(train.images[:2000]), train.labels[:2000]


def measure(images: torch.Tensor, domain: str = "digits", metrics: list[str] = SHARP) -> dict:
    """The metrics of ``images`` as a run of the evaluation ``domain`` would compute them."""
    context = EvalContext(lambda count, seed: images, (1, 28, 28), None, EvalSettings(generated=len(images)),
                          evaluation=domain_evaluation(domain))
    return compute_metrics(context, metrics)


def condition(name: str, images: torch.Tensor, labels: torch.Tensor, count: int = 1000) -> torch.Tensor:
    return condition_images(condition_named(name), images, labels)[:count]


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_shipped_sharp_weights_are_small_and_record_their_test_accuracy(name):
    path = DOMAINS[name].weights_path
    assert path.is_file() and path.stat().st_size < 2_000_000
    features = load_sharp(path)
    assert features(torch.zeros(2, 1, 28, 28)).shape == (2, 128)
    with safe_open(path, "pt") as weights:
        report = json.loads(weights.metadata()["report"])
    assert report["test_accuracy"] >= {"mnist": 0.95, "fashion-mnist": 0.88}[name]


def test_sharp_reference_is_the_test_split():
    assert reference_features(DOMAINS["mnist"]).shape == (len(digit_split().held_out), 128)


def test_sharp_metrics_are_registered_as_defaults_for_digits_and_fashion():
    from distgan.metrics import default_metrics

    assert set(SHARP) <= set(default_metrics((1, 28, 28), "digits"))
    assert set(SHARP) <= set(default_metrics((1, 28, 28), "fashion"))
    assert not set(SHARP) & set(default_metrics((3, 64, 64), None))
    assert "coverage" in METRICS and "manifold-coverage" in METRICS  # distinct names, distinct meanings


def test_fd_sharp_orders_real_noise_blur_and_missing_classes(digits):
    images, labels = digits
    names = ["real (train split)", "real + noise σ 0.1", "real + noise σ 0.3", "real, blur σ 0.5 px",
             "real, classes 0-4 only"]
    scores = [measure(condition(name, images, labels))["fd-sharp"] for name in names]
    assert scores == sorted(scores), dict(zip(names, scores))
    assert scores[0] < 15 and scores[-1] > 150


@needs_fashion
def test_fd_sharp_is_a_number_for_fashion_and_orders_its_defects(fashion):
    images, labels = fashion
    # Blur sigma 1 px, not 0.5: garments have few sharp edges, and 0.5 px costs them less than noise 0.3.
    names = ["real (train split)", "real + noise σ 0.1", "real + noise σ 0.3", "real, blur σ 1.0 px",
             "real, classes 0-4 only"]
    values = [measure(condition(name, images, labels, count=500), "fashion", ["fd-sharp"]) for name in names]
    assert all(isinstance(v["fd-sharp"], float) and v["fd-sharp/reference"] == 10_000 for v in values), values
    scores = [v["fd-sharp"] for v in values]
    assert scores == sorted(scores), dict(zip(names, scores))
    assert scores[0] < 15 and scores[-1] > 150


@needs_fashion
def test_fashion_manifolds_use_as_many_real_images_as_samples(fashion):
    """Against all 10,000 test images 2,000 real samples would cover only 0.61 of the real manifold."""
    images, _ = fashion
    real = measure(images, "fashion")
    assert real["precision"] > 0.85 and real["recall"] > 0.85 and real["manifold-coverage"] > 0.9, real


@needs_fashion
@pytest.mark.parametrize("source, declared, sharp", [
    ("mnist", None, "mnist"),
    ("fashion-mnist", None, "fashion-mnist"),
    (f"mnist:{FASHION_MNIST_DIR}", "fashion", "fashion-mnist"),  # Fashion IDX files, said to be fashion
    (f"mnist:{FASHION_MNIST_DIR}", None, None),  # ... not said: the digit check refuses them
    ("mnist", "fashion", None),  # digits said to be fashion: the fashion check refuses them
])
def test_images_only_ever_get_their_own_domains_sharp_space(source, declared, sharp):
    config = Config(data=DataConfig(source=source, domain=declared, limit=1000))
    decision = run_domain(config)
    context = EvalContext(lambda count, seed: torch.zeros(count, 1, 28, 28), (1, 28, 28), None,
                          EvalSettings(generated=100), evaluation=run_evaluation(config, decision),
                          no_evaluation_reason=decision.note)
    if sharp is None:  # no domain: no sharp space either, and the reason is the domain check's
        with pytest.raises(MetricUnavailable, match="evaluator recognises only"):
            domain_of(context)
    else:
        assert domain_of(context) is DOMAINS[sharp]


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

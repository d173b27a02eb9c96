"""Every labelled metric uses the evaluator of the run's domain: never a digit evaluator on other images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from distgan.config import Config, DataConfig
from distgan.data import load_source
from distgan.data.sources import FASHION_MNIST_DIR, FASHION_MNIST_PACKAGE
from distgan.metrics import EvalContext, EvalSettings, compute_metrics
from distgan.metrics.domains import domain_evaluation, run_domain, run_evaluation
from distgan.metrics.evaluator import accuracy, weights_path
from distgan.metrics.reference import to_unit_range
from distgan.metrics.runs import select_metrics
from distgan.training import train
from tests.conftest import needs_fashion


def test_missing_fashion_folder_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"apt-get install {FASHION_MNIST_PACKAGE}") as error:
        load_source(f"fashion-mnist:{tmp_path / 'absent'}")
    assert str(tmp_path / "absent") in str(error.value)


def test_the_source_declares_the_domain_and_data_domain_overrides_it() -> None:
    assert run_domain(Config()).domain == "digits"
    none = run_domain(Config(data=DataConfig(source="fake")))
    assert none.domain is None and "declares no domain" in none.note and "data.domain" in none.note
    assert run_domain(Config(data=DataConfig(domain="none"))).domain is None
    with pytest.raises(ValueError, match="data.domain='flowers'.*valid: digits, fashion"):
        run_domain(Config(data=DataConfig(domain="flowers")))
    assert select_metrics(Config(data=DataConfig(source="fake")), (1, 28, 28), domain=None) == []


def test_digits_are_refused_the_fashion_evaluator() -> None:
    decision = run_domain(Config(data=DataConfig(domain="fashion")))  # bundled digits declared as fashion
    assert decision.domain is None and "fashion evaluator recognises only" in decision.note


@needs_fashion
def test_fashion_images_never_get_digit_metrics(tmp_path: Path) -> None:
    # IDX files of Fashion-MNIST behind the mnist source: the declared digits domain fails its check ...
    disguised = Config(data=DataConfig(source=f"mnist:{FASHION_MNIST_DIR}"))
    decision = run_domain(disguised)
    assert decision.domain is None and "digits evaluator recognises only" in decision.note
    assert "data.domain" in decision.note and "fashion" in decision.note
    assert select_metrics(disguised, (1, 28, 28), domain=decision.domain) == []
    # ... and saying what they are gives them the fashion evaluator, checked and accepted.
    declared = Config(data=DataConfig(source=f"mnist:{FASHION_MNIST_DIR}", domain="fashion"))
    assert run_domain(declared).domain == "fashion"
    assert run_domain(Config(data=DataConfig(source="fashion-mnist"))).domain == "fashion"


@needs_fashion
def test_a_disguised_fashion_run_writes_unavailable_not_a_number(tmp_path: Path) -> None:
    config = Config(data=DataConfig(source=f"mnist:{FASHION_MNIST_DIR}", limit=400))
    config.model.hidden, config.model.latent_dim = 32, 16
    config.train.rounds, config.train.batch_size = 2, 16
    train(config, tmp_path, quiet=True)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and list(lines[0]["metrics"]) == ["evaluator"]
    assert lines[0]["metrics"]["evaluator"].startswith("unavailable: the digits evaluator recognises only")
    assert "no default metrics" in (tmp_path / "log.txt").read_text()


@needs_fashion
def test_fashion_evaluator_reaches_90_percent_on_its_test_split() -> None:
    evaluation = domain_evaluation("fashion")
    assert weights_path(evaluation.domain.weights).stat().st_size < 1_000_000
    test = evaluation.reference
    assert len(test) == 10_000 and test.name.startswith("fashion-mnist")
    assert accuracy(evaluation.evaluator, to_unit_range(test.images), test.labels) >= 0.90


@needs_fashion
def test_fashion_metrics_use_the_fashion_evaluator_and_reference() -> None:
    evaluation = domain_evaluation("fashion")
    train_images = to_unit_range(evaluation.train.images[:1000])

    def context(images: torch.Tensor, domain: str) -> EvalContext:
        return EvalContext(lambda n, s: images[:n], (1, 28, 28), None, EvalSettings(generated=1000),
                           evaluation=domain_evaluation(domain))

    fashion = compute_metrics(context(train_images, "fashion"), ["cfid", "coverage"])
    assert fashion["cfid/reference"] == 10_000 and fashion["coverage/classes"] == 10 and fashion["cfid"] < 5
    # Under the digit evaluator the same images look like nothing it knows: a far larger cfid.
    digits = compute_metrics(context(train_images, "digits"), ["cfid"])
    assert digits["cfid/reference"] == 1000 and digits["cfid"] > 10 * fashion["cfid"]


def test_a_folder_of_digits_declares_its_domain_and_is_judged_against_its_own_test_split(tmp_path: Path) -> None:
    digits = load_source("mnist")
    for label in range(10):
        (tmp_path / str(label)).mkdir()
        for index in (digits.labels == label).nonzero().flatten()[:12].tolist():
            Image.fromarray(digits.images[index, 0].numpy()).save(tmp_path / str(label) / f"{index}.png")
    undeclared = Config(data=DataConfig(source=f"folder:{tmp_path}", image_size=28, test=30))
    assert run_domain(undeclared).domain is None
    config = Config(data=DataConfig(source=f"folder:{tmp_path}", image_size=28, test=30, domain="digits"))
    decision = run_domain(config)
    assert decision.domain == "digits", decision.note
    evaluation = run_evaluation(config, decision)
    assert evaluation is not None and len(evaluation.reference) == 30
    assert evaluation.reference_name.startswith("the run's test split")

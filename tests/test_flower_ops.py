"""Flower operations without Flower processes (seconds): one meaning of --rounds, the message
budget, stale-feedback warnings and the collapse detector."""

from __future__ import annotations

import json

import pytest

from distgan.cli import build_parser
from distgan.cli.common import CommandError
from distgan.experiments import generator_steps_per_round
from distgan.health import CollapseDetector, CollapseError, read_health, stale_feedback_warning
from distgan.report import RunData, health_section
from tests.conftest import tiny_config


def flower_config(*argv: str):
    from distgan.cli.flower import deployment_config

    args = build_parser().parse_args(["flower", "local", *argv])
    return deployment_config(args, args.party_data)


def train_config(*argv: str):
    from distgan.cli.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("strategy", ["avg-output", "round-robin", "fedgan"])
def test_rounds_mean_the_same_generator_steps_in_train_and_flower(strategy):
    options = ["--strategy", strategy, "--rounds", "1000", "--data", "fake:n=240", "--batch-size", "8"]
    flower, local = flower_config(*options), train_config(*options)
    assert (flower.train.rounds, flower.train.local_steps) == (local.train.rounds, local.train.local_steps) == (1000, 1)
    assert generator_steps_per_round(flower) * flower.train.rounds == generator_steps_per_round(local) * 1000


def test_a_message_over_the_budget_is_refused_with_the_steps_that_fit():
    with pytest.raises(CommandError, match=r"over Flower's 128 MiB budget: use --local-steps 334 or less"):
        flower_config("--strategy", "avg-output", "--local-steps", "400", "--batch-size", "128")
    # weights-exchanging strategies send the same bytes whatever the steps
    assert flower_config("--strategy", "fedgan", "--local-steps", "5000").train.local_steps == 5000


def test_stale_feedback_is_named_with_its_measured_consequence():
    assert stale_feedback_warning(tiny_config("avg-output")) is None
    config = tiny_config("avg-output", train__local_steps=334)
    warning = stale_feedback_warning(config)
    assert warning is not None and "local_steps=334" in warning and "cfid ~414" in warning
    assert stale_feedback_warning(tiny_config("fedgan", train__local_steps=334)) is None


def record(round_number: int, real: float, fake: float, g_loss: float) -> dict:
    return {"round": round_number, "g_loss": g_loss,
            "parties": {"0": {"d_real": real, "d_fake": fake}, "1": {"d_real": real, "d_fake": fake}}}


def test_the_collapse_detector_fires_on_saturated_discriminators_and_writes_health(tmp_path):
    config = tiny_config("avg-output", train__local_steps=334)  # the run: window of 3 rounds
    detector = CollapseDetector.for_run(config, tmp_path)
    assert detector.window == 3
    detector(None, 1, record(1, 0.7, 0.3, 0.9))
    for r in (2, 3):
        detector(None, r, record(r, 0.119, 0.1195, 2.13 + r * 1e-3))  # every input "fake" at the bound C=2
    assert not detector.collapsed
    detector(None, 4, record(4, 0.119, 0.119, 2.13))
    assert detector.collapsed and detector.collapsed_at == 4
    health = read_health(tmp_path)
    assert health is not None and health["collapsed"] and "logit bound since round 2" in health["reason"]
    with pytest.raises(CollapseError, match="collapsed at round 4"):
        detector.raise_if_collapsed()
    assert "TRAINING COLLAPSED at round 4" in health_section([RunData(tmp_path, {}, [], [], {})])


def test_the_collapse_detector_stays_quiet_on_a_learning_run(tmp_path):
    detector = CollapseDetector.for_run(tiny_config("avg-output", train__local_steps=100), tmp_path)
    for r in range(1, 30):
        detector(None, r, record(r, 0.55 + 0.01 * (r % 3), 0.45, 0.8 + 0.01 * (r % 5)))
    assert not detector.collapsed and read_health(tmp_path) is None


def test_the_collapse_detector_fires_when_g_loss_is_flat(tmp_path):
    detector = CollapseDetector.for_run(tiny_config("fedgan", train__local_steps=100), tmp_path)
    for r in range(1, 4):
        detector(None, r, record(r, 0.6, 0.4, 0.693147))
    assert detector.collapsed and "has not moved since round 1" in json.loads(
        (tmp_path / "health.json").read_text())["reason"]

from __future__ import annotations

import pytest

from distgan.config import Config


def test_overrides_parse_by_declared_type():
    config = Config().with_overrides(["train.lr_g=1e-3", "strategy.weighted=true", "data.image_size=none",
                                      "strategy.download_fraction=0.5"])
    assert config.train.lr_g == 1e-3 and config.strategy.weighted is True
    assert config.data.image_size is None and config.strategy.download_fraction == 0.5


@pytest.mark.parametrize("assignment, message", [
    ("train.rounds=0", "train.rounds=0"),
    ("train.rounds=abc", "expected a int"),
    ("train.lr_d=-1", "train.lr_d"),
    ("strategy.upload_fraction=1.5", "(0, 1]"),
    ("strategy.download_fraction=0", "(0, 1]"),
    ("nosuch.field=1", "unknown section"),
    ("train.nosuch=1", "unknown field"),
    ("train.rounds", "section.field=value"),
    ("privacy.delta=2", "privacy.delta"),
    ("privacy.epsilon=-3", "privacy.epsilon"),
    ("runtime.worker_threads=-1", "runtime.worker_threads=-1"),
])
def test_bad_overrides_name_the_field(assignment, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]")):
        Config().with_overrides([assignment])


def test_json_round_trip():
    config = Config().with_overrides(["data.parties=3", "data.split=iid"])
    assert Config.from_dict(config.to_dict()) == config

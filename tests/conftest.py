"""Shared fixtures: tiny configs on fake data, so end-to-end runs take seconds."""

from __future__ import annotations

import os

import pytest
import torch

from distgan.config import Config, DataConfig, ModelConfig, OutputConfig, TrainConfig
from distgan.data.sources import FASHION_MNIST_DIR, FASHION_MNIST_PACKAGE

needs_fashion = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                   reason=f"Debian package {FASHION_MNIST_PACKAGE} not installed")
"""For tests that read the full Fashion-MNIST (its IDX files are not bundled with distgan)."""

# Two cores are shared by the whole suite; one thread each keeps runs predictable.
torch.set_num_threads(int(os.environ.get("DISTGAN_TEST_THREADS", "1")))


def tiny_config(strategy: str = "round-robin", rounds: int = 6, parties: int = 2, split: str = "iid",
                **sections: object) -> Config:
    config = Config(
        data=DataConfig(source="fake:n=240", split=split, parties=parties),
        model=ModelConfig(name="mlp", hidden=32, latent_dim=16),
        train=TrainConfig(rounds=rounds, batch_size=8),
        output=OutputConfig(sample_every=3, checkpoint_every=3, eval_every=1000, log_every=3),
    )
    config.strategy.name = strategy
    for dotted, value in sections.items():
        section, name = dotted.split("__")
        setattr(getattr(config, section), name, value)
    return config


@pytest.fixture
def make_config():
    return tiny_config

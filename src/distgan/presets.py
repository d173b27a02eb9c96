"""Named configurations: Python functions returning a :class:`Config` (torchtitan's habit).

``default`` is what ``distgan train`` runs with no arguments: the paper's Figure 6 setting
(round-robin, two parties holding digits 0-4 and 5-9 of the bundled MNIST) with the tuned model.
"""

from __future__ import annotations

from collections.abc import Callable

from distgan.config import Config, DataConfig, OutputConfig, StrategyConfig, TrainConfig
from distgan.registry import Registry

PRESETS: Registry[Callable[[], Config]] = Registry("preset")


@PRESETS.register("default", "round-robin, 2 parties, bundled MNIST split 0-4 | 5-9 (paper Fig. 6), tuned MLP")
def default() -> Config:
    return Config()


@PRESETS.register("smoke", "a few seconds on fake data: every stage of a run, for checking an install")
def smoke() -> Config:
    return Config(data=DataConfig(source="fake:n=400", split="iid"),
                  train=TrainConfig(rounds=20, batch_size=16),
                  output=OutputConfig(sample_every=10, checkpoint_every=10, eval_every=10, log_every=5))


@PRESETS.register("paper-mlp", "the paper's exact MNIST MLP at the PyTorch tutorial's settings (round-robin 0-4|5-9)")
def paper_mlp() -> Config:
    config = Config(train=TrainConfig(batch_size=100, lr_g=2e-4, lr_d=2e-4, beta1=0.9))
    config.model.name = "paper-mlp"
    return config


@PRESETS.register("server-d", "Alg. 1 on two iid halves of the bundled MNIST (paper Fig. 2)")
def server_d() -> Config:
    return Config(data=DataConfig(split="iid"), strategy=StrategyConfig(name="server-d"))


@PRESETS.register("avg-output", "Alg. 2, one digit per party, 10 parties (paper Fig. 3)")
def avg_output() -> Config:
    return Config(data=DataConfig(split="one-label", parties=10), strategy=StrategyConfig(name="avg-output"))

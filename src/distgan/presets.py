"""Named configurations: Python functions returning a :class:`Config` (torchtitan's habit).

``default`` is what ``distgan train`` runs with no arguments: the paper's Figure 6 setting
(round-robin, two parties holding digits 0-4 and 5-9 of the bundled MNIST) with the tuned model.
"""

from __future__ import annotations

from collections.abc import Callable

from distgan.config import Config, DataConfig, ModelConfig, OutputConfig, StrategyConfig, TrainConfig
from distgan.registry import Registry

PRESETS: Registry[Callable[[], Config]] = Registry("preset")

STATED: dict[str, dict[str, object]] = {}
"""Preset name -> the settings its summary promises (dotted config paths). ``distgan presets`` prints
them and ``tests/test_presets.py`` checks that the preset's config really has them, so a summary can
never again claim a learning rate the preset does not run."""

PresetFunction = Callable[[], Config]


def preset(name: str, summary: str, **stated: object) -> Callable[[PresetFunction], PresetFunction]:
    """Register a preset; ``stated`` (``train__lr_g=2e-4`` for ``train.lr_g``) are the settings its
    summary states, appended to the summary and checked by a test."""
    settings = {key.replace("__", "."): value for key, value in stated.items()}
    STATED[name] = settings
    shown = ", ".join(f"{key}={value}" for key, value in settings.items())
    return PRESETS.register(name, f"{summary} [{shown}]" if shown else summary)


def stated_value(config: Config, path: str) -> object:
    """The value at a dotted config path (``train.lr_g``)."""
    value: object = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


@preset("default", "round-robin, 2 parties, bundled MNIST split 0-4 | 5-9 (paper Fig. 6), tuned MLP "
        "with an up-convolution in G",
        strategy__name="round-robin", data__source="mnist", data__split="labels:0-4/5-9", data__parties=2,
        model__name="mlp-up")
def default() -> Config:
    return Config()


FASHION_ROUNDS = 7000
"""Sized from the default run's measured rate with ``mlp-up`` (4,000 rounds in 4.3 min of training on 2
idle cores, about 16 rounds/s; Fashion-MNIST's images are the same size, so a round costs the same):
7,000 rounds is about 7.3 min of training, plus loading 70,000 images and the metrics, inside 10 minutes."""


@preset("fashion", "Fashion-MNIST demo: round-robin, 2 parties holding classes 0-4 | 5-9 of its 60,000 train "
                   "images, tuned MLP, judged by the Fashion-MNIST evaluator on the 10,000 test images (<= 10 min "
                   "on 2 idle cores)",
        strategy__name="round-robin", data__source="fashion-mnist", data__split="labels:0-4/5-9", data__parties=2,
        train__rounds=FASHION_ROUNDS)
def fashion() -> Config:
    return Config(data=DataConfig(source="fashion-mnist", split="labels:0-4/5-9", parties=2),
                  train=TrainConfig(rounds=FASHION_ROUNDS),
                  output=OutputConfig(eval_every=1000, sample_every=500, checkpoint_every=500))


@PRESETS.register("smoke", "a few seconds on fake data: every stage of a run, for checking an install")
def smoke() -> Config:
    return Config(data=DataConfig(source="fake:n=400", split="iid"),
                  train=TrainConfig(rounds=20, batch_size=16),
                  output=OutputConfig(sample_every=10, checkpoint_every=10, eval_every=10, log_every=5))


@preset("paper-mlp", "the paper's exact MNIST MLP at the PyTorch tutorial's settings (round-robin 0-4|5-9)",
        model__name="paper-mlp", train__batch_size=100, train__lr_g=2e-4, train__lr_d=2e-4, train__beta1=0.9,
        train__g_average=None, strategy__name="round-robin", data__split="labels:0-4/5-9")
def paper_mlp() -> Config:
    # No weight average of G: the paper samples the generator it trained.
    config = Config(train=TrainConfig(batch_size=100, lr_g=2e-4, lr_d=2e-4, beta1=0.9, g_average=None))
    config.model.name = "paper-mlp"
    return config


@PRESETS.register("server-d", "Alg. 1 on two iid halves of the bundled MNIST (paper Fig. 2)")
def server_d() -> Config:
    return Config(data=DataConfig(split="iid"), strategy=StrategyConfig(name="server-d"))


@PRESETS.register("avg-output", "Alg. 2, one digit per party, 10 parties (paper Fig. 3)")
def avg_output() -> Config:
    return Config(data=DataConfig(split="one-label", parties=10), strategy=StrategyConfig(name="avg-output"))


@preset("dp-merf", "release once (DP-MERF): each party's noisy label-conditional random-feature embedding, a "
        "label-conditional G matches their sum; add --dp-epsilon E for privacy (docs/PRIVACY.md)",
        strategy__name="dp-merf", data__split="labels:0-4/5-9", train__rounds=600, train__batch_size=500,
        train__lr_g=3e-3, strategy__random_features=2000)
def dp_merf() -> Config:
    # 600 G steps of 500 samples at lr 3e-3: tstr 0.82 on the bundled MNIST without noise (docs/PRIVACY.md).
    return Config(strategy=StrategyConfig(name="dp-merf", random_features=2000),
                  train=TrainConfig(rounds=600, batch_size=500, lr_g=3e-3))


# -- one preset per result of the paper (``distgan experiment NAME`` runs each over seeds) -------------
# Paper scale: 3,000 rounds on the bundled MNIST, the paper's two parties unless the figure says
# otherwise, the tuned MLP. ``distgan.experiments`` derives the variants of each figure from these and
# shortens them for its ``quick`` scale.
def _mnist(strategy: str, split: str, parties: int = 2) -> Config:
    return Config(data=DataConfig(split=split, parties=parties), strategy=StrategyConfig(name=strategy))


@preset("fig2", "paper Fig. 2: server-d (Alg. 1), MNIST in two iid halves",
        strategy__name="server-d", data__split="iid", data__parties=2)
def fig2() -> Config:
    return _mnist("server-d", "iid")


@preset("fig3", "paper Fig. 3: avg-output (Alg. 2), one digit per party, 10 parties",
        strategy__name="avg-output", data__split="one-label", data__parties=10)
def fig3() -> Config:
    return _mnist("avg-output", "one-label", parties=10)


@preset("fig4-5", "paper Figs. 4-5: avg-output on digits 6 | 8 (similar; Fig. 5 is 4 | 7)",
        strategy__name="avg-output", data__split="labels:6/8", data__parties=2)
def fig4_5() -> Config:
    return _mnist("avg-output", "labels:6/8")


@preset("fig6", "paper Fig. 6: round-robin (Alg. 3), digits 0-4 | 5-9",
        strategy__name="round-robin", data__split="labels:0-4/5-9", data__parties=2)
def fig6() -> Config:
    return _mnist("round-robin", "labels:0-4/5-9")


@preset("fig7", "paper Fig. 7: round-robin, digits 6 | 9",
        strategy__name="round-robin", data__split="labels:6/9", data__parties=2)
def fig7() -> Config:
    return _mnist("round-robin", "labels:6/9")


@PRESETS.register("fig8-10", "paper Figs. 8-10: loss curves; round-robin 0-4 | 5-9 (the experiment adds the other two)")
def fig8_10() -> Config:
    return fig6()


@preset("fig14", "paper Fig. 14: time to a cfid target; round-robin on iid halves, parties in 2 worker processes",
        strategy__name="round-robin", data__split="iid", runtime__workers=2)
def fig14() -> Config:
    config = _mnist("round-robin", "iid")
    config.runtime.workers = 2
    return config


@preset("fig16-18", "paper Figs. 16-18: CelebA, 64 px DCGAN, two iid halves, server-d "
                    "(--data folder:DIR, --strategy for Figs. 17-18); DCGAN's recipe",
        model__name="dcgan", data__split="iid", strategy__name="server-d", train__batch_size=128,
        train__lr_g=2e-4, train__lr_d=2e-4, train__beta1=0.5, train__g_average=None)
def fig16_18() -> Config:
    return _faces("folder:data/celeba")


@preset("fig19-21", "paper Figs. 19-21: LSUN, 64 px DCGAN, two iid halves, server-d "
                    "(--data lsun:DIR, --strategy for Figs. 20-21); DCGAN's recipe",
        model__name="dcgan", data__split="iid", strategy__name="server-d", train__batch_size=128,
        train__lr_g=2e-4, train__lr_d=2e-4, train__beta1=0.5, train__g_average=None)
def fig19_21() -> Config:
    return _faces("lsun:data/lsun")


def _faces(source: str) -> Config:
    # DCGAN's recipe (Radford et al.): batch 128, Adam 2e-4, beta1 0.5, the raw G (no weight average);
    # ~5 epochs of CelebA's 200k faces.
    return Config(data=DataConfig(source=source, split="iid"), strategy=StrategyConfig(name="server-d"),
                  model=ModelConfig(name="dcgan"),
                  train=TrainConfig(rounds=8000, batch_size=128, lr_g=2e-4, lr_d=2e-4, beta1=0.5, g_average=None),
                  output=OutputConfig(sample_every=250, checkpoint_every=500, eval_every=1000, log_every=25))


@preset("fig22", "paper Fig. 22: 5 parties, server-d on iid fifths (the experiment adds round-robin)",
        strategy__name="server-d", data__split="iid", data__parties=5)
def fig22() -> Config:
    return _mnist("server-d", "iid", parties=5)


@PRESETS.register("baselines", "every strategy and baseline, digits 0-4 | 5-9 (the experiment adds dirichlet:0.3, 5 parties)")
def baselines() -> Config:
    return fig6()

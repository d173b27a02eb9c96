"""The Python API behind ``import distgan``: train a run, open a run folder, sample and read metrics.

It does what ``distgan train`` / ``sample`` / ``evaluate`` do, with no process-wide side effects:
no console handler or logger-propagation change (progress lines go to the run's ``log.txt`` and to
the ``distgan`` logger, for the host's logging setup to show or not), torch's global RNG left as it
was, and no SIGINT handler (a notebook's interrupt stops the run at once; the last checkpoint stays).
See docs/API.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distgan import run_folder
from distgan.config import Config, with_values


def make_config(config_or_preset: Config | str = "default", **overrides: Any) -> Config:
    """A config from a :class:`Config` or a preset name (``distgan presets`` lists them), with
    ``overrides``: short names (``rounds=5``, ``strategy="avg-output"``) or ``section__field``
    (``train__lr_g=1e-3``). Unknown names and bad values raise ValueError naming them."""
    from distgan.presets import PRESETS

    if isinstance(config_or_preset, str):
        config = PRESETS.get(config_or_preset)()
    elif isinstance(config_or_preset, Config):
        config = Config.from_dict(config_or_preset.to_dict())  # a copy: the caller's object stays as it was
    else:
        raise TypeError(f"expected a Config or a preset name, got {type(config_or_preset).__name__}")
    config = with_values(config, overrides)
    check_registered_names(config)
    return config


def check_registered_names(config: Config) -> None:
    """Unknown strategy, model, data source or split names fail here, listing the valid ones."""
    from distgan.data import SOURCES
    from distgan.data.partition import SPLITS
    from distgan.models import MODELS
    from distgan.strategies import STRATEGIES

    STRATEGIES.get(config.strategy.name)
    MODELS.get(config.model.name)
    SOURCES.get(config.data.source.split(":", 1)[0])
    SPLITS.get(config.data.split.split(":", 1)[0])


def train(config_or_preset: Config | str = "default", out: str | Path | None = None, *,
          overwrite: bool = False, **overrides: Any) -> Run:
    """Train a new run into the folder ``out`` (default ``runs/<NNNNN>-<strategy>-<n>p``) and
    return it. ``out`` must not exist or be empty, unless ``overwrite``. Blocks until the last
    round; a failed party raises :class:`distgan.parties.PartyFailedError`."""
    from distgan import training

    config = make_config(config_or_preset, **overrides)
    run_dir = Path(out) if out is not None else training.default_run_dir(config)
    created = not run_dir.exists()
    training.check_new_run_dir(run_dir, overwrite)
    try:
        training.train(config, run_dir, embedded=True)
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # setup failed and left nothing behind
    return Run(run_dir)


def load_run(path: str | Path) -> Run:
    """Open a run folder written by :func:`train` or ``distgan train`` (any version's layout)."""
    run = Run(Path(path))
    run.config  # noqa: B018  fails now, naming the folder, if it is not a run
    return run


class Run:
    """A run folder: its config, per-round stats, metrics, and samples from its checkpoints."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self) -> Config:
        return run_folder.load_config(self.path)

    def stats(self) -> list[dict[str, Any]]:
        """One dict per round from ``stats.jsonl``: ``g_loss``, per-party ``d_loss``, bytes, seconds."""
        return run_folder.read_stats(self.path)

    def metrics(self) -> dict[str, Any]:
        """The newest metrics the run wrote (its end-of-run set when it finished); {} if none."""
        history = self.metrics_history()
        return history[-1]["metrics"] if history else {}

    def metrics_history(self) -> list[dict[str, Any]]:
        """Every ``metrics.jsonl`` entry: ``{"round": R, "elapsed_s": T, "metrics": {...}}``."""
        return run_folder.read_metrics(self.path)

    def sample(self, n: int, seed: int = 0, round: int | None = None) -> torch.Tensor:
        """``n`` images, uint8 ``[n, C, H, W]`` (as ``distgan sample`` writes), from the generator of
        the newest intact checkpoint (or that of ``round``); the same ``seed`` gives the same images."""
        from distgan.images import to_uint8
        from distgan.sampling import generate, load_generator

        generator, config, _ = load_generator(self.path, round)
        return to_uint8(generate(generator, n, seed, config.model.latent_dim))

    def evaluate(self, metrics: list[str] | None = None, round: int | None = None) -> dict[str, Any]:
        """Recompute metrics on a checkpoint (default: the newest, the run's default metrics)."""
        from distgan.metrics.runs import evaluate_run

        return dict(evaluate_run(self.path, round, metrics)[1])

"""distgan: train one GAN across several data holders without moving raw samples.

The Python API (docs/API.md)::

    import distgan
    run = distgan.train("smoke", out="runs/demo", rounds=10)   # a preset or a distgan.Config
    run.stats()[-1]["g_loss"], run.metrics(), run.config.strategy.name
    images = distgan.load_run("runs/demo").sample(16)            # uint8 [16, C, H, W]

``import distgan`` stays light: torch and the training code load on first use of ``train``,
``load_run`` or ``Run``. Nothing here touches logging, signals or torch's global RNG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distgan.config import Config

if TYPE_CHECKING:
    from distgan.api import Run, load_run, make_config, train

__version__ = "0.1.0"
__all__ = ["Config", "Run", "__version__", "load_run", "make_config", "presets", "train"]

_LAZY = {"train": "distgan.api", "load_run": "distgan.api", "make_config": "distgan.api", "Run": "distgan.api"}


def presets() -> dict[str, str]:
    """Preset name -> one-line description (``distgan presets`` prints the same)."""
    from distgan.presets import PRESETS

    return {name: PRESETS.summary(name) for name in PRESETS.names()}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'distgan' has no attribute {name!r}")

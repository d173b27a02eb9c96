"""The app folder ``flwr run`` submits for one distgan run.

``[tool.flwr.app.components]`` points at ``distgan.runtime.flower.server:server_app`` and
``distgan.runtime.flower.client:client_app``, inside the installed distgan package (two modules,
so a ClientApp process, started for every message, imports only what a party needs): the app
folder holds only ``pyproject.toml`` (with the run's config as run-config defaults), and every host
runs the distgan it has installed (runtime dependency installation is off).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

from distgan.config import Config
from distgan.runtime.flower.parties import FlowerSettings

SERVER_COMPONENT = "distgan.runtime.flower.server:server_app"
CLIENT_COMPONENT = "distgan.runtime.flower.client:client_app"
APP_NAME = "distgan"
PUBLISHER = "distgan"


def _toml_string(text: str) -> str:
    # A JSON string literal is a valid TOML basic string: the same escapes, ASCII only.
    return json.dumps(text, ensure_ascii=True)


def write_app(folder: Path, config: Config, run_dir: Path, resume: bool = False,
              settings: FlowerSettings | None = None) -> Path:
    """Write the Flower app folder for one run (``flwr run FOLDER CONNECTION`` submits it)."""
    settings = settings or FlowerSettings()
    version = importlib.metadata.version("distgan")
    run_config = {
        "distgan-config": _toml_string(json.dumps(config.to_dict(), sort_keys=True)),
        "run-dir": _toml_string(str(run_dir.resolve())),
        "resume": "true" if resume else "false",
        "reply-timeout": repr(float(settings.reply_timeout_s or 0.0)),
        "discovery-timeout": repr(float(settings.discovery_timeout_s)),
        "poll-interval": repr(float(settings.poll_interval_s)),
    }
    lines = [
        "# Written by distgan: the Flower app of one distgan run. The code is the installed distgan",
        "# package on every host; `flwr run` ships only this file.",
        "[project]",
        f'name = "{APP_NAME}"',
        f'version = "{version}"',
        'description = "distgan: one GAN trained across data holders that keep their data"',
        'license = "MIT"',
        f'dependencies = ["distgan=={version}"]',
        "",
        "[tool.flwr.app]",
        f'publisher = "{PUBLISHER}"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVER_COMPONENT}"',
        f'clientapp = "{CLIENT_COMPONENT}"',
        "",
        "[tool.flwr.app.config]",
        *(f"{key} = {value}" for key, value in run_config.items()),
        "",
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pyproject.toml"
    path.write_text("\n".join(lines))
    return path


"""The ServerApp: its main loop is distgan's coordinator, with parties behind Flower.

It reads the run from the Flower run config (keys of the app's ``[tool.flwr.app.config]``):

``distgan-config``     the run's config as JSON (``Config.to_json()``)
``run-dir``            the run folder on the ServerApp's host (config, stats, samples, checkpoints)
``resume``             continue the run in ``run-dir`` from its last checkpoint
``reply-timeout``      seconds before a silent party counts as failed (0: wait)
``discovery-timeout``  seconds to wait for every party's SuperNode to join
``poll-interval``      seconds between pulls for replies

and then does exactly what ``distgan train`` does (:func:`distgan.training.train`), with
:class:`FlowerParties` in place of local parties. The ServerApp host needs no data: G's image
shape comes from the parties' Describe replies.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from distgan import run_folder, training
from distgan.checkpoint import atomic_write_text
from distgan.config import Config
from distgan.coordinator import Coordinator, RoundHook
from distgan.health import CollapseError, read_health
from distgan.runtime.flower.coarse import check_message_budget
from distgan.runtime.flower.parties import FlowerParties, FlowerSettings

log = logging.getLogger("distgan")


@dataclass(frozen=True)
class ServerRun:
    """One coordinator run inside a ServerApp."""

    config: Config
    run_dir: Path
    resume: bool = False
    settings: FlowerSettings = field(default_factory=FlowerSettings)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ServerRun:
        raw = run_config.get("distgan-config")
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError("Flower run config: distgan-config is empty; put the run's config JSON there "
                             "(distgan flower app writes it)")
        try:
            config = Config.from_dict(json.loads(raw))
        except json.JSONDecodeError as error:
            raise ValueError(f"Flower run config: distgan-config is not valid JSON ({error})") from None
        run_dir = run_config.get("run-dir")
        if not isinstance(run_dir, str) or not run_dir:
            raise ValueError("Flower run config: run-dir is empty; name the run folder on the ServerApp host")
        return cls(config, Path(run_dir), bool(run_config.get("resume", False)),
                   FlowerSettings.from_run_config(run_config))


def run_on_grid(grid: Grid, run: ServerRun, session: str | None = None,
                round_hooks: Sequence[RoundHook] = ()) -> Coordinator:
    """Train one run with parties behind ``grid``: ``distgan train``'s steps, Flower's transport
    (``round_hooks`` as :func:`distgan.training.train` takes them, after Flower's own)."""
    if not run.resume and (run.run_dir / run_folder.CONFIG).exists():
        raise training.RunFolderError(f"{run.run_dir}: holds a run already; set resume=true to continue it "
                                      "or choose a new run-dir")
    run.run_dir.mkdir(parents=True, exist_ok=True)
    training.setup_logging(run.run_dir)  # before the SuperNodes join, so log.txt shows who joined
    # Each launch is a session; its name starts with the run's id, which names the parties' state
    # folders on their nodes (a resumed run, a new Flower run, finds them again).
    session = session or f"{run_id(run.run_dir)}.{uuid.uuid4().hex[:8]}"
    parties = FlowerParties(grid, run.config, run.settings, session)
    # The parties' data decides the message size: refuse a run whose messages would not fit.
    check_message_budget(run.config, training.described_image_shape(parties.descriptions))
    coordinator = training.train(run.config, run.run_dir, resume=run.resume, parties=parties,
                                 round_hooks=[parties.record_round, parties.readmit_returning, *round_hooks])
    shares = [r["overhead_share"] for r in parties.overhead.rounds]
    if shares:
        log.info("Flower message overhead: %.0f%% of round time on average (%.2f s per round)",
                 100 * sum(shares) / len(shares),
                 sum(r["overhead_s"] for r in parties.overhead.rounds) / len(shares))
    # A collapsed run ends as failed, so `flwr ls` says finished:failed with the reason (its
    # outputs are all written by now).
    health = read_health(run.run_dir)
    if health is not None and health.get("collapsed"):
        raise CollapseError(f"training collapsed at round {health.get('round')}: {health.get('reason')} "
                            f"(run folder {run.run_dir})")
    return coordinator


RUN_ID_FILE = run_folder.RUN_ID


def run_id(run_dir: Path) -> str:
    """The distgan run's id, made once when the run starts and kept in ``RUN_DIR/run-id``."""
    path = run_dir / RUN_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        identity = uuid.uuid4().hex[:12]
        atomic_write_text(path, identity + "\n")
        return identity


def build_server_app(run: ServerRun | None = None) -> ServerApp:
    """A ServerApp for ``run``, or (None) for the run its Flower run config describes."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_on_grid(grid, run or ServerRun.from_run_config(context.run_config))

    return app


server_app = build_server_app()
"""The ServerApp Flower loads (``[tool.flwr.app.components] serverapp``): its run from the run config."""

"""Flower's simulation engine, driven from Python: the same ServerApp and ClientApp as deployment.

Virtual SuperNodes run as Ray actors: on this machine by default, or on every machine of a Ray
cluster (``ray_address="auto"`` with ``ray start`` done on each host; see the README). Node ``k``
plays party ``k`` (Flower sets ``partition-id``); party state travels in Flower's node context, so
an actor on any host can serve any party.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from distgan.config import Config
from distgan.coordinator import Coordinator, RoundHook
from distgan.runtime.flower.client import build_client_app
from distgan.runtime.flower.parties import FlowerSettings
from distgan.runtime.flower.server import ServerRun, build_server_app, run_on_grid
from distgan.strategies import STRATEGIES


@dataclass(frozen=True)
class RayResources:
    cpus_per_party: float = 1.0
    """CPU cores reserved per virtual node; Ray runs floor(cores / this) nodes at once."""
    gpus_per_party: float | None = None
    """GPU share per virtual node (0.25: four nodes per GPU); None: :func:`gpu_share` decides."""
    address: str | None = None
    """Ray cluster address (``auto``: the cluster this host joined); None starts Ray here."""
    total_cpus: int | None = None
    """Cap on the cores a local Ray instance uses (None: all)."""

    def backend_config(self) -> dict[str, Any]:
        init_args: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": True}
        if self.address is not None:
            init_args["address"] = self.address
        elif self.total_cpus is not None:
            init_args["num_cpus"] = self.total_cpus
        return {"client_resources": {"num_cpus": self.cpus_per_party, "num_gpus": self.gpus_per_party or 0.0},
                "init_args": init_args}


def gpu_share(config: Config, requested: float | None, nodes: int, cuda_available: bool) -> float:
    """GPU share each virtual node reserves. Ray hides every GPU from an actor that reserves none, so
    parties meant to run on CUDA must reserve a share: by default one GPU split over the nodes."""
    device = config.runtime.device
    wants_gpu = device.startswith("cuda") or (device == "auto" and cuda_available)
    if requested is None:
        return 1.0 / nodes if wants_gpu else 0.0
    if requested == 0 and device.startswith("cuda"):
        raise ValueError(f"runtime.device={device} with --gpus-per-party 0: Ray hides the GPU from parties that "
                         "reserve none; give each a share (e.g. --gpus-per-party 0.5) or use runtime.device=cpu")
    return requested


def node_count(config: Config) -> int:
    return 1 if STRATEGIES.get(config.strategy.name).pooled_data else config.data.parties


def run_in_simulation(server_app: ServerApp, nodes: int, resources: RayResources | None = None,
                      state_root: Path | None = None, keep_live: bool = True, mods: list[Mod] | None = None) -> None:
    """Run ``server_app`` against ``nodes`` virtual SuperNodes running distgan's ClientApp."""
    from flwr.simulation import run_simulation

    client_app = build_client_app(state_root, keep_live=keep_live, mods=mods)
    run_simulation(server_app, client_app, num_supernodes=nodes,
                   backend_config=(resources or RayResources()).backend_config())  # type: ignore[arg-type]


def simulate(config: Config, run_dir: Path, resources: RayResources | None = None, resume: bool = False,
             settings: FlowerSettings | None = None) -> None:
    """Train ``config`` into ``run_dir`` on Flower's simulation engine, one virtual node per party."""
    run = ServerRun(config, run_dir, resume, settings or FlowerSettings())
    _run_parties(config, build_server_app(run), resources, run_dir)


def _run_parties(config: Config, server_app: ServerApp, resources: RayResources | None, run_dir: Path) -> None:
    """``server_app`` against one virtual node per party, each with its share of the GPU if it needs one."""
    resources = resources or RayResources()
    nodes = node_count(config)
    resources = replace(resources, gpus_per_party=gpu_share(config, resources.gpus_per_party, nodes,
                                                                        torch.cuda.is_available()))
    run_in_simulation(server_app, nodes, resources, state_root=run_dir)


def train_in_simulation(config: Config, run_dir: Path, round_hooks: Sequence[RoundHook] = (),
                        resources: RayResources | None = None) -> Coordinator:
    """:func:`simulate` for a caller that needs the coordinator and its round hooks (``distgan
    experiment``: a wall-time or quality target watched on Flower's transport)."""
    finished: list[Coordinator] = []

    def main(grid: Grid) -> None:
        finished.append(run_on_grid(grid, ServerRun(config, run_dir), round_hooks=round_hooks))

    _run_parties(config, server_app_of(main), resources, run_dir)
    if not finished:  # Flower logs a ServerApp's exception and returns; the run folder's log says why
        raise RuntimeError(f"the Flower simulation of {run_dir} ended without finishing its run "
                           f"(see {run_dir / 'log.txt'})")
    return finished[0]


def server_app_of(main: Callable[[Grid], None]) -> ServerApp:
    """A ServerApp that runs ``main(grid)``: several runs in one simulation (tests, benchmarks)."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: object) -> None:
        main(grid)

    return app

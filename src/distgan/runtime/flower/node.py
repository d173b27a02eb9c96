"""What a Flower node is to distgan: which party it plays, which data it reads, where it keeps state.

Read from the node config (``flower-supernode --node-config``; the simulation engine sets
``partition-id`` and ``num-partitions`` itself):

``partition-id``    the party this node plays (required; 0 .. parties-1)
``num-partitions``  when given, must equal the run's number of parties
``data-dir``        the node's OWN data as a source spec (``mnist:DIR``, ``folder:DIR``, a plain
                    folder means ``folder:DIR``); without it the node takes share ``partition-id``
                    of the run's ``data.source`` split by ``data.split`` (simulation, demos)
``state-dir``       where the party keeps its checkpoints: a folder per distgan run,
                    ``<state-dir>/run-<run id>/parties/party-<id>``, so runs sharing a state-dir
                    never load or prune each other's files (``run.json`` there names the run)

The run id is the distgan run's, not Flower's: it is the part of the session before the first
``.`` (the ServerApp keeps it in ``RUN_DIR/run-id``), so a resumed run, which Flower gives a new
run id, finds its parties' checkpoints again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distgan import protocol as p
from distgan.assembly import DataPlan, build_party, plan_data
from distgan.checkpoint import atomic_write_text
from distgan.config import Config
from distgan.data import SOURCES, Partition
from distgan.party import Party
from distgan.strategies import STRATEGIES

log = logging.getLogger("distgan.flower")


class NodeConfigError(ValueError):
    """A node config that cannot describe a party of this run."""


@dataclass(frozen=True)
class NodeSettings:
    party_id: int
    data_source: str | None
    state_root: Path
    """This run's state folder on the node (``<state-dir>/run-<run id>``)."""
    run_key: str = ""

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any], config: Config, run_id: int | str,
                         default_state_root: Path | None = None) -> NodeSettings:
        """``run_id``: the distgan run (:func:`run_key_of` the session) whose state folder this node uses."""
        raw_id = node_config.get("partition-id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, int):
            raise NodeConfigError(f"node config partition-id={raw_id!r}: every node needs an integer "
                                  "partition-id naming its party (flower-supernode --node-config 'partition-id=0 ...')")
        parties = 1 if STRATEGIES.get(config.strategy.name).pooled_data else config.data.parties
        if not 0 <= raw_id < parties:
            raise NodeConfigError(f"node config partition-id={raw_id}: this run has parties 0..{parties - 1}")
        declared = node_config.get("num-partitions")
        data_dir = node_config.get("data-dir")
        if declared is not None and declared != config.data.parties and data_dir is None:
            raise NodeConfigError(f"node config num-partitions={declared!r} but the run splits "
                                  f"{config.data.source!r} among data.parties={config.data.parties}")
        if data_dir is not None and (not isinstance(data_dir, str) or not data_dir):
            raise NodeConfigError(f"node config data-dir={data_dir!r}: expected a folder or a source spec")
        state = node_config.get("state-dir")
        if state is not None:
            state_root = Path(str(state))
        elif default_state_root is not None:
            state_root = default_state_root
        else:
            state_root = Path(tempfile.gettempdir()) / "distgan-flower"
        return cls(raw_id, source_spec(data_dir) if data_dir else None, run_state_folder(state_root, str(run_id)),
                   str(run_id))


def run_key_of(session: str) -> str:
    """The distgan run a session belongs to: the session up to its first ``.``."""
    return session.split(".", 1)[0]


def run_state_folder(state_root: Path, run_key: str) -> Path:
    """``<state_root>/run-<run_key>``: this run's party state, apart from every other run's."""
    if not run_key or not all(c.isalnum() or c in "-_" for c in run_key):
        raise NodeConfigError(f"run id {run_key!r}: expected letters, digits, - and _ only")
    return state_root / f"run-{run_key}"


def mark_run_state_folder(folder: Path, run_key: str) -> None:
    """Write ``run.json`` (the run id) into a run's state folder once, so an operator can tell runs apart."""
    marker = folder / "run.json"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(marker, json.dumps({"run": run_key}) + "\n")


def source_spec(data_dir: str) -> str:
    """``mnist:DIR`` / ``folder:DIR`` / ``fake`` pass through; a plain path means ``folder:PATH``."""
    name = data_dir.split(":", 1)[0]
    return data_dir if name in SOURCES.names() else f"folder:{data_dir}"


def resume_saved_state(party: Party, node: NodeSettings) -> int | None:
    """Load the newest state this party saved in this run (a restarted SuperNode rejoining, or a
    resumed run); the round it was saved at, or None when the run's folder holds none yet."""
    folder = node.state_root / "parties" / f"party-{node.party_id}"
    rounds = sorted(int(path.stem.split("-", 1)[1]) for path in folder.glob("round-*.json")
                    if path.stem.split("-", 1)[1].isdigit())
    for round_index in reversed(rounds):  # the newest readable one (a crash may have cut the last)
        try:
            party.handle(p.LoadState(round_index))
        except (OSError, ValueError, KeyError) as error:
            log.warning("party %d: its state of round %d is unreadable (%s); trying an older one",
                        node.party_id, round_index, error)
            continue
        return round_index
    return None


def build_node_party(config: Config, node: NodeSettings) -> Party:
    """The party this node plays, on the node's data (the only place real samples are read)."""
    pooled = STRATEGIES.get(config.strategy.name).pooled_data
    if node.run_key:
        mark_run_state_folder(node.state_root, node.run_key)
    if node.data_source is None:
        return build_party(config, plan_data(config), node.party_id, node.state_root, pooled)
    own = dataclasses.replace(config, data=dataclasses.replace(
        config.data, source=node.data_source, split="iid", parties=1),
        train=dataclasses.replace(config.train, parties_per_round=None))
    data_plan = plan_data(own)
    if data_plan.data.label_names is not None and config.data.labels is None:
        raise NodeConfigError(
            f"{node.data_source}: labelled by subfolder ({', '.join(data_plan.data.label_names)}), but the run declares "
            "no label map, so label k would mean this node's k-th folder; start the run with the map of every "
            "party's label names (distgan flower app --labels NAME,NAME,... or --set data.labels=...)")
    # This node knows only its own data: in its view of the partition every other share is empty.
    empty = torch.zeros(0, dtype=torch.int64)
    shares = [empty] * node.party_id + [torch.arange(len(data_plan.data))]
    return build_party(own, DataPlan(data_plan.data, Partition(shares), data_plan.num_labels),
                       node.party_id, node.state_root, pooled=False)

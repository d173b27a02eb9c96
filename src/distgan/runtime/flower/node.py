"""What a Flower node is to distgan: which party it plays, which data it reads, where it keeps state.

Read from the node config (``flower-supernode --node-config``; the simulation engine sets
``partition-id`` and ``num-partitions`` itself):

``partition-id``    the party this node plays (required; 0 .. parties-1)
``num-partitions``  when given, must equal the run's number of parties
``data-dir``        the node's OWN data as a source spec (``mnist:DIR``, ``folder:DIR``, a plain
                    folder means ``folder:DIR``); without it the node takes share ``partition-id``
                    of the run's ``data.source`` split by ``data.split`` (simulation, demos)
``state-dir``       where the party keeps its checkpoints (``<state-dir>/parties/party-<id>``)
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distgan.assembly import DataPlan, build_party, plan_data
from distgan.config import Config
from distgan.data import SOURCES, Partition
from distgan.party import Party
from distgan.strategies import STRATEGIES


class NodeConfigError(ValueError):
    """A node config that cannot describe a party of this run."""


@dataclass(frozen=True)
class NodeSettings:
    party_id: int
    data_source: str | None
    state_root: Path

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any], config: Config, run_id: int,
                         default_state_root: Path | None = None) -> NodeSettings:
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
            state_root = Path(tempfile.gettempdir()) / "distgan-flower" / f"run-{run_id}"
        return cls(raw_id, source_spec(data_dir) if data_dir else None, state_root)


def source_spec(data_dir: str) -> str:
    """``mnist:DIR`` / ``folder:DIR`` / ``fake`` pass through; a plain path means ``folder:PATH``."""
    name = data_dir.split(":", 1)[0]
    return data_dir if name in SOURCES.names() else f"folder:{data_dir}"


def build_node_party(config: Config, node: NodeSettings) -> Party:
    """The party this node plays, on the node's data (the only place real samples are read)."""
    pooled = STRATEGIES.get(config.strategy.name).pooled_data
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

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
                    and, under DP with a privacy floor, its privacy journal
                    (``<state-dir>/privacy/dataset-<hash>``: the ledger and the replies it released, one
                    per dataset across runs, :mod:`distgan.privacy.journal`; without a floor the journal
                    is the run's, in the party's folder)

The run id is the distgan run's, not Flower's: it is the part of the session before the first
``.`` (the ServerApp keeps it in ``RUN_DIR/run-id``), so a resumed run, which Flower gives a new
run id, finds its parties' checkpoints again.

The node's own privacy floor (``distgan flower supernode --privacy-floor``): the data holder, not the
coordinator, fixes the least privacy any run on its data gets. A run asking for less is refused at
its greeting, with a message that reaches the coordinator's log (``node N refused to join: ...``):

``privacy-epsilon``        the epsilon budget of this node's dataset over ALL runs (one ledger per
                           dataset); a run may ask for at most this; required for a floor
``privacy-delta``          the largest delta a run may use (a run without one uses this)
``privacy-max-grad-norm``  the largest clipping bound C a run may use
``privacy-mechanisms``     the mechanisms allowed, comma-separated (default: every DP mechanism)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
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


class PrivacyFloorRefusal(NodeConfigError):
    """A run that asks for less privacy than the node's floor."""


FLOOR_KEYS = {"epsilon": "privacy-epsilon", "delta": "privacy-delta", "max-grad-norm": "privacy-max-grad-norm",
              "mechanisms": "privacy-mechanisms"}
"""``--privacy-floor`` names -> node config keys."""


@dataclass(frozen=True)
class PrivacyFloor:
    """The least privacy a node's data holder accepts for its dataset (node config ``privacy-*``)."""

    epsilon: float
    delta: float | None = None
    max_grad_norm: float | None = None
    mechanisms: tuple[str, ...] | None = None
    """Allowed mechanisms; None: every differentially private one."""

    @classmethod
    def from_node_config(cls, node_config: dict[str, Any]) -> PrivacyFloor | None:
        given = {key: node_config[key] for key in FLOOR_KEYS.values() if key in node_config}
        if not given:
            return None
        if "privacy-epsilon" not in given:
            raise NodeConfigError(f"node config {', '.join(sorted(given))} without privacy-epsilon: a privacy floor "
                                  "needs the node's epsilon budget")

        def positive(key: str, upper: float = math.inf) -> float | None:
            value = given.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < upper:
                raise NodeConfigError(f"node config {key}={value!r}: expected a number in (0, {upper:g})")
            return float(value)

        mechanisms = given.get("privacy-mechanisms")
        allowed = None
        if mechanisms is not None:
            from distgan.privacy.mechanisms import MECHANISMS

            allowed = tuple(name.strip() for name in str(mechanisms).split(",") if name.strip())
            unknown = [name for name in allowed if name not in MECHANISMS.names()]
            if not allowed or unknown:
                raise NodeConfigError(f"node config privacy-mechanisms={mechanisms!r}: expected a comma-separated "
                                      f"list of {', '.join(MECHANISMS.names())}")
        epsilon = positive("privacy-epsilon")
        assert epsilon is not None
        return cls(epsilon, positive("privacy-delta", 1.0), positive("privacy-max-grad-norm"), allowed)

    @staticmethod
    def parse_option(text: str) -> dict[str, float | str]:
        """``epsilon=10,delta=1e-5,max-grad-norm=1,mechanisms=dp-sgd`` (``--privacy-floor``) -> node config
        entries (``mechanisms`` may list several, separated by ``+``)."""
        entries: dict[str, float | str] = {}
        for part in filter(None, (item.strip() for item in text.split(","))):
            name, _, value = part.partition("=")
            key = FLOOR_KEYS.get(name.strip())
            if key is None or not value:
                raise ValueError(f"--privacy-floor {text!r}: {part!r} is not NAME=VALUE with NAME one of "
                                 f"{', '.join(FLOOR_KEYS)}")
            if key == "privacy-mechanisms":
                entries[key] = value.strip().replace("+", ",")
            else:
                try:
                    entries[key] = float(value)
                except ValueError:
                    raise ValueError(f"--privacy-floor {text!r}: {name}={value!r} is not a number") from None
        PrivacyFloor.from_node_config(entries)  # the same checks the node makes
        return entries

    def apply(self, config: Config) -> Config:
        """The run's config with the node's limits in force, or :class:`PrivacyFloorRefusal` naming what
        the run asked for and what the node allows."""
        from distgan.privacy.mechanisms import resolve_mechanism

        privacy = config.privacy
        where = "this node's privacy floor (its node config)"
        if not privacy.enabled:
            raise PrivacyFloorRefusal(f"this run has no differential privacy, but {where} requires it with an "
                                      f"epsilon budget of {self.epsilon:g}: set --dp-epsilon")
        if privacy.epsilon is not None and privacy.epsilon > self.epsilon:
            raise PrivacyFloorRefusal(f"this run asks for privacy.epsilon={privacy.epsilon:g}, but {where} allows at "
                                      f"most epsilon {self.epsilon:g} (privacy-epsilon)")
        if self.delta is not None and privacy.delta is not None and privacy.delta > self.delta:
            raise PrivacyFloorRefusal(f"this run asks for privacy.delta={privacy.delta:g}, but {where} allows at "
                                      f"most delta {self.delta:g} (privacy-delta)")
        if self.max_grad_norm is not None and privacy.max_grad_norm > self.max_grad_norm:
            raise PrivacyFloorRefusal(f"this run asks for privacy.max_grad_norm={privacy.max_grad_norm:g}, but {where} "
                                      f"allows at most {self.max_grad_norm:g} (privacy-max-grad-norm)")
        mechanism = resolve_mechanism(config)
        if self.mechanisms is not None and mechanism not in self.mechanisms:
            raise PrivacyFloorRefusal(f"this run uses privacy mechanism {mechanism!r}, but {where} allows only "
                                      f"{', '.join(self.mechanisms)} (privacy-mechanisms)")
        limited = dataclasses.replace(
            privacy, epsilon=self.epsilon if privacy.epsilon is None else privacy.epsilon,
            delta=self.delta if privacy.delta is None else privacy.delta)
        return dataclasses.replace(config, privacy=limited)


@dataclass(frozen=True)
class NodeSettings:
    party_id: int
    data_source: str | None
    state_root: Path
    """This run's state folder on the node (``<state-dir>/run-<run id>``)."""
    run_key: str = ""
    floor: PrivacyFloor | None = None
    node_root: Path | None = None
    """The node's state folder (``state-dir``), where its datasets' privacy journals live across runs."""

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
        floor = PrivacyFloor.from_node_config(node_config)
        state = node_config.get("state-dir")
        if state is not None:
            state_root = Path(str(state))
        elif default_state_root is not None:
            state_root = default_state_root
        elif floor is not None:
            raise NodeConfigError("a node with a privacy floor keeps its dataset's privacy ledger under its "
                                  "state-dir, which must outlive runs: set node config state-dir")
        else:
            state_root = Path(tempfile.gettempdir()) / "distgan-flower"
        return cls(raw_id, source_spec(data_dir) if data_dir else None, run_state_folder(state_root, str(run_id)),
                   str(run_id), floor, state_root)

    def journal_dir(self, config: Config) -> Path | None:
        """Where this node keeps the privacy journal of its dataset: with a privacy floor one per dataset,
        across runs (the floor's epsilon is the dataset's budget); without one None, i.e. the party's
        state folder of this run (the coordinator's config then decides, as on the local runtimes)."""
        if self.floor is None:
            return None
        if self.data_source is not None:
            spec = self.data_source
            kind, _, location = spec.partition(":")
            identity: dict[str, Any] = {"source": f"{kind}:{Path(location).resolve()}" if location else spec,
                                        "limit": config.data.limit}
        else:  # a share of the run's source: the same share is the same data
            data = config.data
            identity = {"source": data.source, "limit": data.limit, "split": data.split, "parties": data.parties,
                        "party": self.party_id, "seed": config.runtime.seed}
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        return (self.node_root or self.state_root) / "privacy" / f"dataset-{key}"


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
    """The party this node plays, on the node's data (the only place real samples are read), with the
    node's privacy floor in force (:class:`PrivacyFloorRefusal` for a run asking for less)."""
    if node.floor is not None:
        config = node.floor.apply(config)
    pooled = STRATEGIES.get(config.strategy.name).pooled_data
    journal = node.journal_dir(config)
    if node.run_key:
        mark_run_state_folder(node.state_root, node.run_key)
    if node.data_source is None:
        return build_party(config, plan_data(config), node.party_id, node.state_root, pooled, journal)
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
                       node.party_id, node.state_root, pooled=False, journal_dir=journal)

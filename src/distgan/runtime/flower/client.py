"""The ClientApp: each Flower message is one :meth:`Party.handle` call, nothing more.

A run (a *session*) starts with ``query.hello``, which carries the run's config; the node builds
its party from its node config (:mod:`distgan.runtime.flower.node`) and answers with its party id
and the party's reply to Describe.
Every later message is a protocol request, decoded, handed to the party, its reply encoded.

Flower deployment starts a new ClientApp process for every message (unless the node runs resident
parties: :mod:`distgan.runtime.flower.resident`), and the simulation engine may hand a node's
messages to different actors, so the party's whole state (D, optimizers, RNG, local G:
:meth:`Party.state_tensors`) goes into the node's ``context.state`` after every message, which
Flower keeps per node for the run, and is restored from there when this process does not already
hold the latest version. Nothing here assumes one host. Any failure becomes an error reply naming
the party; the ServerApp counts it as that party's failure.

Order: a ``flwr-clientapp`` process pushes its reply *before* its Context (Flower 1.42,
``run_clientapp``), so a fast next message could be given the previous Context. Such a process
therefore also writes the party's state to the node's state folder (:func:`live_state_path`)
before it returns the reply, and a restore takes whichever of the two is newer. A resident party
process keeps the party in memory, writes the same file before each reply and puts only the
session record (with the state's version) into the Context, which it pushes before it takes the
next task (:class:`StateStore`): the state does not travel through the Runtime API twice per
message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.common.constant import ErrorCode

from distgan import protocol as p
from distgan.config import Config
from distgan.party import Party
from distgan.runtime.flower.node import NodeSettings, build_node_party, resume_saved_state, run_key_of
from distgan.runtime.flower.records import envelope_of, from_content, to_content

log = logging.getLogger("distgan.flower")

HELLO = "query.hello"
"""Transport handshake, not a protocol message: config down, party id and Description up."""
HELLO_RECORD = "hello"
SESSION_RECORD = "distgan.session"
PARTY_STATE_RECORD = "distgan.party"
LIVE_PARTIES = 16
"""Parties a long-lived process (a simulation actor) keeps built, so it rarely restores."""


@dataclass
class _Live:
    session: str
    version: int
    party: Party


_live: OrderedDict[tuple[int, int], _Live] = OrderedDict()


def build_client_app(state_root: Path | None = None, keep_live: bool = True,
                     mods: list[Mod] | None = None) -> ClientApp:
    """A ClientApp answering every protocol request. ``state_root``: the node state folder when the
    node config names none; ``keep_live=False`` rebuilds the party from ``context.state`` for every
    message, as each new deployment process does (tests use it to prove the state survives);
    ``mods``: Flower mods around every message (e.g. ``flwr.clientapp.mod.message_size_mod``)."""
    app = ClientApp(mods=mods)

    def handle(message: Message, context: Context) -> Message:
        key = (context.run_id, context.node_id)
        try:
            if message.metadata.message_type == HELLO:
                content = _hello(message.content, context, state_root)
            else:
                content = _serve(message, context, state_root, keep_live)
            return Message(content, reply_to=message)
        except Exception as error:  # noqa: BLE001  every failure becomes an error reply; the node lives on
            _live.pop(key, None)  # the party may be half-updated: rebuild from the stored state
            reason = f"{type(error).__name__}: {error}"
            log.warning("node %d: %s failed: %s", context.node_id, message.metadata.message_type, reason)
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)

    for kind in [HELLO] + [request.kind for request in p.REQUESTS]:
        category, action = kind.split(".", 1)
        getattr(app, category)(action)(handle)
    return app


client_app = build_client_app()
"""The ClientApp Flower loads (``[tool.flwr.app.components] clientapp``)."""


def _hello(content: RecordDict, context: Context, state_root: Path | None) -> RecordDict:
    record = content.config_records.get(HELLO_RECORD)
    if record is None or not isinstance(record.get("session"), str) or not isinstance(record.get("config"), str):
        raise p.ProtocolError(f"{HELLO} without session and config")
    session, config_json = str(record["session"]), str(record["config"])
    config = Config.from_dict(json.loads(config_json))
    node = NodeSettings.from_node_config(dict(context.node_config), config, run_key_of(session), state_root)
    party = build_node_party(config, node)
    # A node greeted in a run whose state folder holds its party's checkpoints (a restarted
    # SuperNode, a resumed run) goes on from the newest; a resumed run's LoadState then sets the round.
    resumed = resume_saved_state(party, node)
    # The greeting answers with the party's Description, saving deployment one round trip.
    description = party.handle(p.Describe())
    _store(context, session, config_json, party, 1, state_root)
    log.info("node %d plays party %d in session %s%s", context.node_id, node.party_id, session,
             "" if resumed is None else f", from its state of round {resumed}")
    extra: dict[str, int | float | str | bool] = {"session": session, "party": node.party_id}
    if resumed is not None:
        extra["resumed_round"] = resumed
    return to_content(description, extra)


def _serve(message: Message, context: Context, state_root: Path | None, keep_live: bool) -> RecordDict:
    session_record = context.state.config_records.get(SESSION_RECORD)
    if session_record is None:
        raise RuntimeError("this node holds no party: it was not greeted for this run, or it restarted "
                           "and lost its state")
    session = str(session_record["session"])
    envelope = envelope_of(message.content)
    if envelope.get("session") != session:
        raise RuntimeError(f"request for session {envelope.get('session')!r}, but this node plays in {session!r}")
    request = from_content(message.content)
    if request.kind != message.metadata.message_type or request.direction != "down":
        raise p.ProtocolError(f"message type {message.metadata.message_type!r} carries {request.kind!r}")
    party = _restore(context, state_root, keep_live)
    started = time.perf_counter()
    reply = party.handle(request)
    seconds = time.perf_counter() - started
    # Stored before the reply leaves (see the module docstring).
    _store(context, session, str(session_record["config"]), party, _version(session_record) + 1, state_root)
    if party.privacy is not None:  # compute time depends on the Poisson batch and the data: withheld under DP
        seconds = 0.0
    return to_content(reply, {"session": session, "party": party.party_id, "seconds": seconds})


@dataclass
class StateStore:
    """Where the party's state goes after every message (its session record always goes into the
    Context). ``context``: its tensors into the Context too (simulation actors, per-message
    processes); ``file``: into :func:`live_state_path`, before the reply is returned (a per-message
    process, whose Context Flower pushes after the reply; a resident party process, which keeps the
    party in memory and so need not send its state through the Runtime API twice per message)."""

    context: bool = True
    file: bool = False


PER_MESSAGE_PROCESS = os.path.basename(sys.argv[0]) == "flwr-clientapp"
"""True in a process Flower started for one message (its Context is pushed after the reply)."""
STATE = StateStore(context=True, file=PER_MESSAGE_PROCESS)


def live_state_path(state_root: Path, run_id: int, node_id: int) -> Path:
    """Where a per-message ClientApp process leaves its party's latest state for the next one."""
    return state_root / "flower-live" / f"run-{run_id}-node-{node_id}.pt"


def _write_live_state(path: Path, session: str, version: int, tensors: dict[str, torch.Tensor],
                      meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    torch.save({"session": session, "version": version, "meta": json.dumps(meta),
                "tensors": {name: tensor.detach().cpu() for name, tensor in tensors.items()}}, partial)
    os.replace(partial, path)  # atomic: a reader sees the old state or the new one


def _read_live_state(path: Path, session: str) -> tuple[int, dict[str, torch.Tensor], dict] | None:
    if not path.is_file():
        return None
    saved = torch.load(path, weights_only=True)
    if saved.get("session") != session:
        return None
    return int(saved["version"]), dict(saved["tensors"]), json.loads(saved["meta"])


def _restore(context: Context, state_root: Path | None, keep_live: bool) -> Party:
    record = context.state.config_records[SESSION_RECORD]
    session, version = str(record["session"]), _version(record)
    key = (context.run_id, context.node_id)
    live = _live.get(key)
    if keep_live and live is not None and live.session == session and live.version == version:
        _live.move_to_end(key)
        return live.party
    config = Config.from_dict(json.loads(str(record["config"])))
    node = NodeSettings.from_node_config(dict(context.node_config), config, run_key_of(session), state_root)
    party = build_node_party(config, node)
    saved = _read_live_state(live_state_path(node.state_root, context.run_id, context.node_id), session)
    arrays = context.state.array_records.get(PARTY_STATE_RECORD)
    if saved is not None and (saved[0] > version or (saved[0] == version and arrays is None)):
        if saved[0] > version:  # the previous process's Context was not pushed yet
            log.info("node %d: party state version %d from %s (the Context holds %d)", context.node_id,
                     saved[0], node.state_root, version)
        _, tensors, meta = saved
    elif arrays is not None:
        tensors = {name: torch.from_numpy(np.array(array.numpy(), copy=True)) for name, array in arrays.items()}
        meta = json.loads(str(record["meta"]))
    else:
        raise RuntimeError(f"node {context.node_id}: the state of version {version} of its party is neither in the "
                           f"Context nor in {live_state_path(node.state_root, context.run_id, context.node_id)}")
    party.load_state_tensors(tensors, meta)
    return party


def _version(record: ConfigRecord) -> int:
    version = record["version"]
    assert isinstance(version, int)
    return version


def _store(context: Context, session: str, config_json: str, party: Party, version: int,
           state_root: Path | None) -> None:
    tensors, meta = party.state_tensors()
    if STATE.file:
        node = NodeSettings.from_node_config(dict(context.node_config), Config.from_dict(json.loads(config_json)),
                                             run_key_of(session), state_root)
        _write_live_state(live_state_path(node.state_root, context.run_id, context.node_id), session, version,
                          tensors, meta)
    if STATE.context:
        context.state[PARTY_STATE_RECORD] = ArrayRecord(
            {name: Array(tensor.detach().cpu().contiguous().numpy()) for name, tensor in tensors.items()})
    elif PARTY_STATE_RECORD in context.state:
        del context.state[PARTY_STATE_RECORD]  # an older version: the file holds the state
    context.state[SESSION_RECORD] = ConfigRecord(
        {"session": session, "config": config_json, "version": version, "meta": json.dumps(meta)})
    key = (context.run_id, context.node_id)
    _live[key] = _Live(session, version, party)
    _live.move_to_end(key)
    while len(_live) > LIVE_PARTIES:
        _live.popitem(last=False)

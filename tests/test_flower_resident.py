"""Resident party processes (``distgan.runtime.flower.resident``) against Flower's own Runtime API.

The Runtime API here is the SuperNode's (``flwr.supernode.main.create_app`` over a real NodeState,
served by uvicorn on loopback, as ``flower-supernode`` serves it); the test plays the SuperNode's
fleet loop, storing each message and creating its task as ``start_client_internal`` does. The
parity with ``distgan train`` over a whole deployment runs in tests/test_flower_deployment.py.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.common.constant import SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supernode.nodestate import NodeStateFactory

from distgan import protocol as p
from distgan.config import Config
from distgan.runtime.flower import client, resident
from distgan.runtime.flower.apps import write_app
from distgan.runtime.flower.client import HELLO, HELLO_RECORD, PARTY_STATE_RECORD, SESSION_RECORD
from distgan.runtime.flower.local import free_port
from distgan.runtime.flower.records import from_content, to_content

RUN_ID = 11
NODE_ID = 5


def small_config() -> Config:
    return Config.from_dict({}).with_overrides([
        "data.source=fake:n=64", "data.parties=2", "train.batch_size=8", "model.hidden=32",
        "model.latent_dim=16"])


def incoming(run_id: int, content: RecordDict, message_type: str) -> Message:
    """A message from the ServerApp to this node, as the SuperNode receives it."""
    from flwr.app.message import make_message

    return make_message(metadata=Metadata(run_id=run_id, message_id="", src_node_id=1, dst_node_id=NODE_ID,
                                          reply_to_message_id="", group_id="", created_at=time.time(),
                                          ttl=600.0, message_type=message_type), content=content)


@dataclass
class RuntimeApi:
    """A SuperNode's NodeState and its Runtime API on loopback."""

    state: Any
    address: str

    def deliver(self, run_id: int, content: RecordDict, message_type: str) -> tuple[int, str]:
        """Store a message for this node and create its task, as the SuperNode does on a pull."""
        from flwr.supernode.start_client_internal import _insert_message

        task_id = self.state.create_task(task_type=TaskType.CLIENT_APP, run_id=run_id,
                                         fab_hash=self.state.get_run(run_id).fab_hash)
        message = incoming(run_id, content, message_type)
        _insert_message(message, self.state, self.state.object_store)
        return task_id, message.metadata.message_id

    def claim(self) -> str:
        node = resident.runtime_client(self.address, None, "SuperExec")
        claimed = node.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        assert claimed.token, "no task to claim"
        return str(claimed.token)

    def reply_to(self, message_id: str) -> Message:
        replies = [m for m in self.state.get_messages_legacy(is_reply=True)
                   if m.metadata.reply_to_message_id == message_id]
        assert len(replies) == 1, replies
        return replies[0]

    def task_status(self, task_id: int) -> str:
        return str(self.state.get_tasks(task_ids=[task_id])[0].status.sub_status)

    def context(self, run_id: int) -> Context:
        return self.state.get_run_series_context(self.state.get_run(run_id).series_id)


@pytest.fixture
def runtime_api(tmp_path: Path) -> Iterator[RuntimeApi]:
    import uvicorn
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.config import get_fused_config_from_fab
    from flwr.supernode.main import create_app

    state = NodeStateFactory(objectstore_factory=ObjectStoreFactory()).state()
    state.set_node_id(NODE_ID)
    write_app(tmp_path / "app", small_config(), tmp_path / "run")
    content = build_fab_from_disk(tmp_path / "app")
    fab = Fab(hashlib.sha256(content).hexdigest(), content, {})
    state.store_fab(fab)
    for series, run_id in enumerate((RUN_ID, RUN_ID + 1)):
        run = replace(Run.create_empty(run_id), fab_hash=fab.hash_str, primary_task_type=TaskType.SERVER_APP,
                      series_id=series)
        state.store_run(run)
        state.set_run_series_context(series, Context(
            run_id=run_id, node_id=NODE_ID, state=RecordDict(), run_config=get_fused_config_from_fab(content, run),
            node_config={"partition-id": 0, "num-partitions": 2, "state-dir": str(tmp_path / "node")}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app=_app(create_app, state),
                                           host="127.0.0.1", port=port, workers=1, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    try:
        yield RuntimeApi(state, f"127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _app(create_app: Any, state: Any) -> Any:
    class _Factory:  # the SuperNode's factory hands every request the same NodeState
        def state(self) -> Any:
            return state

    return create_app(state_factory=_Factory())


def hello(config: Config, session: str = "s1") -> RecordDict:
    return RecordDict({HELLO_RECORD: ConfigRecord({"session": session, "config": config.to_json()})})


def test_a_resident_party_serves_its_run_pushes_the_context_and_refuses_another_run(runtime_api, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setattr(client, "STATE", client.StateStore())  # the party process's setting stays in this test
    token = resident._TaskToken()
    party = resident.ResidentParty(RUN_ID, resident.runtime_client(runtime_api.address, None, "flwr-clientapp",
                                                                    token), token)

    task, message_id = runtime_api.deliver(RUN_ID, hello(small_config()), HELLO)
    assert party.run_task(runtime_api.claim()) == SubStatus.COMPLETED
    reply = runtime_api.reply_to(message_id)
    assert not reply.has_error()
    assert runtime_api.task_status(task) == SubStatus.COMPLETED
    # The Context (the session record with the state's version) was pushed before run_task
    # returned, i.e. before the node process may claim the next task; the state itself went to the
    # node's state folder before the reply.
    session = runtime_api.context(RUN_ID).state.config_records[SESSION_RECORD]
    assert session["session"] == "s1" and session["version"] == 1
    assert PARTY_STATE_RECORD not in runtime_api.context(RUN_ID).state.array_records
    assert len(list((tmp_path / "node").rglob(f"flower-live/run-{RUN_ID}-node-{NODE_ID}.pt"))) == 1

    task, message_id = runtime_api.deliver(RUN_ID + 1, hello(small_config(), "other"), HELLO)
    assert party.run_task(runtime_api.claim()) == SubStatus.FAILED
    refusal = runtime_api.reply_to(message_id)
    assert refusal.has_error()
    assert f"resident party of run {RUN_ID} refuses a task of run {RUN_ID + 1}" in refusal.error.reason
    assert runtime_api.task_status(task) == SubStatus.FAILED
    assert SESSION_RECORD not in runtime_api.context(RUN_ID + 1).state.config_records  # left as it was


def _train_request(config: Config, session: str) -> RecordDict:
    torch.manual_seed(0)
    fakes = torch.randn(1, config.train.batch_size, 1, 28, 28)
    return to_content(p.TrainDiscriminator(fakes, feedback=True), {"session": session})


def _serve(app: Any, content: RecordDict, message_type: str, context: Context) -> Message:
    return app(message=incoming(RUN_ID, content, message_type), context=context)


def test_a_per_message_clientapp_finds_the_state_its_predecessor_saved_before_replying(tmp_path, monkeypatch):
    """Flower pushes a ClientApp's reply before its Context: the next process may get the old
    Context. The state file written before the reply keeps the run exact."""
    config = small_config()
    monkeypatch.setattr(client, "STATE", client.StateStore(context=True, file=True))  # a flwr-clientapp's
    app = client.build_client_app(keep_live=False)
    node_config = {"partition-id": 0, "num-partitions": 2, "state-dir": str(tmp_path / "node")}
    context = Context(run_id=RUN_ID, node_id=NODE_ID, node_config=node_config, state=RecordDict(), run_config={})
    assert not _serve(app, hello(config), HELLO, context).has_error()
    request = _train_request(config, "s1")
    kind = p.TrainDiscriminator.kind

    stale = Context(run_id=RUN_ID, node_id=NODE_ID, node_config=node_config,
                    state=RecordDict(dict(context.state)), run_config={})
    first = _serve(app, request, kind, context)  # the previous message: its Context not pushed yet
    assert not first.has_error()
    live = list((tmp_path / "node").rglob(f"flower-live/run-{RUN_ID}-node-{NODE_ID}.pt"))
    assert len(live) == 1  # in the run's state folder under the node's state-dir
    from_stale = from_content(_serve(app, request, kind, stale).content)
    from_fresh = from_content(_serve(app, request, kind, context).content)
    assert isinstance(from_stale, p.Feedback) and isinstance(from_fresh, p.Feedback)
    assert torch.equal(from_stale.input_gradients, from_fresh.input_gradients)
    assert torch.equal(from_stale.logits, from_fresh.logits)
    assert from_stale.stats == from_fresh.stats
    # Without the file the stale Context would answer with the D of one message earlier.
    live[0].unlink()
    client.STATE.file = False
    from_stale_alone = from_content(_serve(app, request, kind, stale).content)
    assert isinstance(from_stale_alone, p.Feedback)
    assert not torch.equal(from_stale_alone.input_gradients, from_fresh.input_gradients)


def test_without_the_tested_task_api_a_supernode_keeps_flowers_clientapp_processes(monkeypatch, caplog):
    command = ["flower-supernode", "--superlink", "127.0.0.1:9092", "--port", "9094"]
    wrapped = resident.resident_supernode_command(command, "127.0.0.1:9094")
    assert wrapped[-len(command) - 2:] == [*command, "--isolation", "process"]
    assert wrapped[1:4] == ["-m", "distgan.runtime.flower.resident", "node"]

    monkeypatch.setattr(resident.importlib.metadata, "version", lambda name: "1.43.0")
    with caplog.at_level(logging.WARNING, logger="distgan.flower"):
        assert resident.resident_supernode_command(command, "127.0.0.1:9094") == command
    assert "flwr 1.43.0 is installed; resident parties speak the task API of flwr 1.42.x" in caplog.text


def test_the_supernode_poll_setting_shortens_only_the_waits_it_was_tested_on(monkeypatch):
    import flwr.supernode.cli
    import flwr.supernode.start_client_internal as loop

    monkeypatch.setenv(resident.SUPERNODE_POLL_ENVIRONMENT, "0.05")
    command = resident.resident_supernode_command(["flower-supernode", "--insecure"], "127.0.0.1:9094")
    tuned = command[command.index("--") + 1:]
    assert tuned[1:6] == ["-m", "distgan.runtime.flower.resident", "supernode", "--poll", "0.05"]
    assert tuned[-3:] == ["--insecure", "--isolation", "process"]
    monkeypatch.setenv(resident.SUPERNODE_POLL_ENVIRONMENT, "5")
    with pytest.raises(ValueError, match="DISTGAN_SUPERNODE_POLL='5'"):
        resident.resident_supernode_command(["flower-supernode"], "127.0.0.1:9094")

    started: list[list[str]] = []
    monkeypatch.setattr(loop, "time", loop.time)  # restored after the test
    monkeypatch.setattr(flwr.supernode.cli, "flower_supernode", lambda: started.append(list(resident.sys.argv)))
    monkeypatch.setattr(resident.sys, "argv", ["python"])
    resident.run_tuned_supernode(0.02, ["--insecure"])
    assert started == [["flower-supernode", "--insecure"]]
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    loop.time.sleep(3)  # the SuperNode's wait after an empty pull
    loop.time.sleep(0.5)  # its wait for the ClientApp's reply
    loop.time.sleep(0.01)
    assert slept == [0.02, 0.02, 0.01]
    assert loop.time.monotonic is time.monotonic  # everything else is the time module's


def test_a_node_stops_party_processes_without_tasks_and_keeps_the_busy_one():
    import subprocess
    import sys

    def party_process(run_id: int, idle_s: float) -> Any:
        process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        return resident._PartyProcess(run_id, process, last_task=time.monotonic() - idle_s)

    node = resident.Node("127.0.0.1:9", None)
    node.parties[1], node.parties[2] = party_process(1, resident.PARTY_IDLE_S + 60), party_process(2, 5)
    ended = node.parties[1].process
    node.stop_idle(time.monotonic() - resident.PARTY_IDLE_S)
    assert list(node.parties) == [2] and ended.returncode == 0  # stdin closed: it ended by itself
    node.stop()
    assert node.parties == {}

"""Resident parties: one long-lived process per run on a Flower node instead of a process per message.

Flower 1.42 runs a ClientApp by starting ``flwr-clientapp`` for every message (SuperExec's
``SubprocessExecutor``): each message re-imports torch and rebuilds the party (~5 s idle, 20+ s
under load). This module replaces the SuperExec of a SuperNode started with ``--isolation
process`` and speaks Flower's own task API to it (the Runtime API ``flwr-clientapp`` uses):

``AcquireTask``                 claim the next ClientApp task and its token (the *node* process)
``PullTaskInput``               the task's Context, Run and FAB
``PullMessages``/``PullObject`` the message, its objects
``PushMessages``/``PushObject`` the reply
``PushTaskOutput``              the Context (with the party's state) and the task's status

Processes (one process group, started as ``python -m distgan.runtime.flower.resident node --
flower-supernode ... --isolation process``):

* the **node** process starts the SuperNode as its child, claims one task at a time and hands its
  token to the party process of the task's run (starting it on the run's first task); it imports
  neither torch nor distgan's training code. It claims the next task only after the party process
  said the previous one is done, i.e. after the party's Context was pushed: a next message can
  never read stale party state.
* a **party** process per run keeps torch, its data, its D, optimizers and RNG in memory
  (:data:`distgan.runtime.flower.client.client_app`, whose in-memory party cache makes a message one
  :meth:`Party.handle` call) and still pushes the party's state in the Context after every message,
  so a restarted node resumes from it. It was built for one run id and refuses a task of any other
  run, and a run of any other app, with an error reply.

The task API is Flower's internal interface: this module is pinned to the flwr version it is tested
with (:data:`TESTED_FLWR`). With any other Flower, or when its task API is absent,
:func:`resident_supernode_command` logs why and leaves the SuperNode to start its own SuperExec
(Flower's per-message ClientApp processes, the same ClientApp code).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.metadata
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger("distgan.flower")

TESTED_FLWR = "1.42"
"""The Flower minor version whose task API this module speaks; other versions fall back."""
MAX_RUNS = 2
"""Party processes a node keeps (one per run); the least recently used one beyond is stopped."""
PARTY_IDLE_S = 900.0
"""A party process without a task for this long is stopped (its run has likely ended); a later task
of its run starts it again from the state it saved."""
POLL_MIN_S = 0.005
"""Task poll interval right after a task: the next message of a run usually follows within a second."""
POLL_ENVIRONMENT = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""The idle poll interval (capped backoff) is Flower's SuperExec setting, default 0.25 s here."""
MESSAGE_WAIT_S = 60.0
"""How long a claimed task waits for its message: the SuperNode creates the task before it has
stored the message, which a fast claimer can see."""
OBJECT_BACKOFF_S = (0.005, 0.2)
"""Initial and maximal backoff pulling a message's objects (Flower's own: 1 s doubling to 10 s)."""
SUPERNODE_POLL_ENVIRONMENT = "DISTGAN_SUPERNODE_POLL"
"""Seconds; when set, the SuperNode's two hard-coded waits (3 s after an empty pull of the
SuperLink, 0.5 s between looks for a reply) are shortened to this (:func:`run_tuned_supernode`)."""
RESIDENT_LOG_ENVIRONMENT = "DISTGAN_RESIDENT_LOG"  # "debug": each task logs TASK_TIMES_LOG
TASK_TIMES_LOG = "task: %s s (input, answer, reply, context)"  # benchmarks/flower_overhead.py parses it


def task_api_problem() -> str | None:
    """None when the installed Flower has the task API this module was tested with; else why not."""
    try:
        version = importlib.metadata.version("flwr")
    except importlib.metadata.PackageNotFoundError:
        return "Flower is not installed"
    if version.split(".")[:2] != TESTED_FLWR.split("."):
        return f"flwr {version} is installed; resident parties speak the task API of flwr {TESTED_FLWR}.x"
    try:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullTaskInputRequest  # noqa: F401
        from flwr.supercore.runtime import RuntimeHttpClient  # noqa: F401
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output  # noqa: F401
    except ImportError as error:
        return f"flwr {version} lacks the ClientApp task API ({error})"
    return None


def resident_supernode_command(supernode_command: list[str], runtime_address: str) -> list[str]:
    """The command that starts ``supernode_command`` (a ``flower-supernode`` command line whose
    Runtime API listens on ``runtime_address``) with resident party processes; the command
    unchanged, with a log line saying why, when this Flower lacks the tested task API."""
    problem = task_api_problem()
    if problem is not None:
        log.warning("resident parties off: %s; Flower starts a ClientApp process per message", problem)
        return supernode_command
    command = [sys.executable, "-m", "distgan.runtime.flower.resident", "node", "--runtime-api", runtime_address]
    if "--ssl-ca-certfile" in supernode_command:  # the Runtime API itself speaks TLS
        command += ["--root-certificates", supernode_command[supernode_command.index("--ssl-ca-certfile") + 1]]
    poll = os.environ.get(SUPERNODE_POLL_ENVIRONMENT)
    if poll:
        supernode_command = [sys.executable, "-m", "distgan.runtime.flower.resident", "supernode",
                             "--poll", str(_poll_seconds(poll)), "--", *supernode_command[1:]]
    return [*command, "--", *supernode_command, "--isolation", "process"]


def _poll_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.01 <= value <= 3.0:
        raise ValueError(f"{SUPERNODE_POLL_ENVIRONMENT}={raw!r}: expected seconds between 0.01 and 3")
    return value


def run_tuned_supernode(poll_s: float, arguments: list[str]) -> None:
    """``flower-supernode ARGUMENTS`` with the waits of its message loop shortened to ``poll_s``.

    Flower 1.42's SuperNode sleeps 3 s whenever a pull of the SuperLink finds no message and 0.5 s
    between looks for the ClientApp's reply (``flwr/supernode/start_client_internal.py``); neither
    is a setting. This replaces that module's ``time`` with one whose ``sleep`` waits at most
    ``poll_s``: a patch of Flower at run time, applied only when the module's source has exactly
    those waits (refused otherwise), and only on request (``DISTGAN_SUPERNODE_POLL``)."""
    import inspect

    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli import flower_supernode

    source = inspect.getsource(loop)
    if source.count("time.sleep(3)") != 1 or source.count("time.sleep(0.5)") != 2 or \
            task_api_problem() is not None:
        raise SystemExit(f"{SUPERNODE_POLL_ENVIRONMENT}: this Flower's SuperNode loop is not the one (flwr "
                         f"{TESTED_FLWR}) whose waits it shortens; unset it")

    class _ShortWaits:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(min(seconds, poll_s))

    loop.time = _ShortWaits()  # type: ignore[assignment]
    sys.argv = ["flower-supernode", *arguments]
    flower_supernode()


# -- the task API client ------------------------------------------------------------------------------
class _TaskToken:
    """The task token header of the current task (one HTTP connection serves every task)."""

    def __init__(self) -> None:
        self.value = ""

    def intercept(self, context: Any, call_next: Any) -> Any:
        from flwr.supercore.constant import TASK_TOKEN_HEADER
        from flwr.supercore.interceptors.http.utils import add_headers

        if self.value:
            add_headers(context.request, {TASK_TOKEN_HEADER: self.value})
        return call_next(context)


def runtime_client(address: str, root_certificates: str | None, component: str,
                   token: _TaskToken | None = None, retry: bool = True) -> Any:
    """A client of a SuperNode's Runtime API (plain HTTP unless ``root_certificates``);
    ``retry=False``: a failed request raises at once (Flower's retries back off for minutes)."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(token)
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=root_certificates is None, root_certificates=root_certificates,
        interceptors=interceptors, retry_invoker=make_simple_http_retry_invoker() if retry else None)


# -- the party process of one run ---------------------------------------------------------------------
class ResidentParty:
    """Serves the tasks of run ``run_id`` on one node with the party kept in memory."""

    def __init__(self, run_id: int, client: Any, token: _TaskToken) -> None:
        from distgan.runtime.flower import client as clientapp

        # The party stays in this process; its durable copy goes to the node's state folder before
        # each reply, and only its session record (with the state's version) into the Context.
        clientapp.STATE.context, clientapp.STATE.file = False, True
        self.run_id = run_id
        self.app = clientapp.client_app
        self._client = client
        self._token = token
        self._app_checked = False

    def run_task(self, token: str) -> str:
        """Serve the task of ``token``: pull its input, answer, push the reply and then the
        Context. Returns the task's final status (``completed`` or ``failed``)."""
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
        from flwr.proto.runtime_pb2 import PullTaskInputRequest
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supercore.task_identity import TaskIdentity
        from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

        self._token.value = token
        times = [time.perf_counter()]
        heartbeat = HeartbeatSender(self._heartbeat)
        heartbeat.start()
        context = None
        status, details = SubStatus.FAILED, "the resident party could not serve the task"
        try:
            task_input = self._client.PullTaskInput(PullTaskInputRequest())
            received = context_from_proto(task_input.context)
            run = run_from_proto(task_input.run)
            TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = (  # as flwr-clientapp sets it
                task_input.task_id, run.run_id, received.node_id)
            message = self._pull_message(received.node_id, run.run_id)
            times.append(time.perf_counter())
            refusal = self._refusal(run.run_id, task_input.fab.content if task_input.HasField("fab") else b"",
                                    fab_from_proto)
            if refusal is not None:
                log.warning("node %d: %s", received.node_id, refusal)
                reply, details = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, refusal), reply_to=message), refusal
            else:
                reply = self.app(message=message, context=received)  # failures become error replies
                context, status, details = received, SubStatus.COMPLETED, ""
            times.append(time.perf_counter())
            push_message(self._client, reply, received)
            times.append(time.perf_counter())
        except Exception as error:  # a transport failure: Flower's task expiry answers the server
            log.exception("node task failed")
            details = f"{type(error).__name__}: {error}"
        finally:
            with contextlib.suppress(RuntimeError):  # its thread ended already
                heartbeat.stop()
            # The Context (the party's state) is pushed before this process takes another task;
            # a refused task leaves the node's Context as it was.
            push_task_output(client=self._client, context=context, sub_status=status, details=details)
            self._token.value = ""
            times.append(time.perf_counter())
            log.debug(TASK_TIMES_LOG,
                      " ".join(f"{b - a:.3f}" for a, b in itertools.pairwise(times)))
        return status

    def _refusal(self, run_id: int, fab_content: bytes, fab_from_proto: Any) -> str | None:
        if run_id != self.run_id:
            return f"the resident party of run {self.run_id} refuses a task of run {run_id}"
        if not self._app_checked:
            from flwr.common.config import get_fab_config

            from distgan.runtime.flower.apps import CLIENT_COMPONENT

            try:
                components = get_fab_config(fab_content)["tool"]["flwr"]["app"]["components"]
            except (KeyError, TypeError, ValueError) as error:
                return f"run {run_id}: unreadable app bundle ({error}); resident parties serve distgan's app only"
            if components.get("clientapp") != CLIENT_COMPONENT:
                return (f"run {run_id} is the app of clientapp {components.get('clientapp')!r}; this node's "
                        f"resident parties serve {CLIENT_COMPONENT!r} only")
            self._app_checked = True
        return None

    def _pull_message(self, node_id: int, run_id: int) -> Any:
        from flwr.app import Message
        from flwr.proto.node_pb2 import Node
        from flwr.proto.runtime_pb2 import PullAppMessagesRequest
        from flwr.supercore.inflatable.inflatable_protobuf_utils import (
            make_confirm_message_received_fn_protobuf,
            make_pull_object_fn_protobuf,
        )
        from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

        deadline = time.monotonic() + MESSAGE_WAIT_S
        while not (pulled := self._client.PullMessages(PullAppMessagesRequest())).messages_list:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no message arrived for the task within {MESSAGE_WAIT_S:g} s")
            time.sleep(POLL_MIN_S)
        node = Node(node_id=node_id)
        tree = pulled.message_object_trees[0]
        message = pull_and_inflate_object_from_tree(
            tree, make_pull_object_fn_protobuf(self._client.PullObject, node, run_id),
            make_confirm_message_received_fn_protobuf(self._client.ConfirmMessageReceived, node, run_id),
            return_type=Message, initial_backoff=OBJECT_BACKOFF_S[0], backoff_cap=OBJECT_BACKOFF_S[1])
        message.metadata.__dict__["_message_id"] = tree.object_id  # as flwr-clientapp does
        return message

    def _heartbeat(self) -> bool:
        import httpx
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

        try:
            return bool(self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)
        except httpx.HTTPError:
            return False


def serve_run(run_id: int, address: str, root_certificates: str | None, tokens: IO[str], done: IO[str]) -> None:
    """A party process: serve each task token read from ``tokens``, answer ``done STATUS`` for each."""
    token = _TaskToken()
    party = ResidentParty(run_id, runtime_client(address, root_certificates, "flwr-clientapp", token), token)
    for line in tokens:
        status = party.run_task(line.strip())
        done.write(f"done {status}\n")
        done.flush()


# -- the node process -----------------------------------------------------------------------------------
@dataclass
class _PartyProcess:
    run_id: int
    process: subprocess.Popen[str]
    last_task: float = 0.0

    def run_task(self, token: str) -> bool:
        """Hand over ``token``; True once the party reports the task done (Context pushed)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.last_task = time.monotonic()
        try:
            self.process.stdin.write(token + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return False
        return self.process.stdout.readline().startswith("done")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()  # end of tokens: the party process exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


class Node:
    """Claims the ClientApp tasks of one SuperNode and hands each to its run's party process."""

    def __init__(self, address: str, root_certificates: str | None) -> None:
        self.address, self.root_certificates = address, root_certificates
        self.parties: OrderedDict[int, _PartyProcess] = OrderedDict()
        self.idle_poll_s = _idle_poll_interval()

    def party(self, run_id: int) -> _PartyProcess:
        live = self.parties.get(run_id)
        if live is not None and live.process.poll() is None:
            self.parties.move_to_end(run_id)
            return live
        if live is not None:
            log.warning("the party process of run %d exited (code %s); starting it again from its Context",
                        run_id, live.process.returncode)
        command = [sys.executable, "-m", "distgan.runtime.flower.resident", "party", "--run-id", str(run_id),
                   "--runtime-api", self.address, "--parent-pid", str(os.getpid())]
        if self.root_certificates:
            command += ["--root-certificates", self.root_certificates]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.parties[run_id] = _PartyProcess(run_id, process)
        log.info("resident party process %d started for run %d", process.pid, run_id)
        while len(self.parties) > MAX_RUNS:
            _, oldest = self.parties.popitem(last=False)
            log.info("stopping the resident party process of run %d (runs kept: %d)", oldest.run_id, MAX_RUNS)
            oldest.stop()
        return self.parties[run_id]

    def serve(self, supernode: subprocess.Popen[bytes] | None = None) -> int:
        """Claim and hand over tasks until ``supernode`` exits; its exit code."""
        import httpx
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        client = runtime_client(self.address, self.root_certificates, "SuperExec", retry=False)
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        delay = POLL_MIN_S
        while supernode is None or supernode.poll() is None:
            try:
                claimed = client.AcquireTask(request)
            except httpx.HTTPError:  # the SuperNode's Runtime API is not up (yet)
                time.sleep(0.5)
                continue
            if claimed.HasField("task") and claimed.token:
                log.debug("claimed a task of run %d", claimed.task.run_id)
                party = self.party(claimed.task.run_id)
                if not party.run_task(claimed.token):
                    log.error("the party process of run %d died during a task; Flower answers it with an error "
                              "when its token expires", claimed.task.run_id)
                delay = POLL_MIN_S
            else:
                time.sleep(delay)
                delay = min(self.idle_poll_s, delay * 1.5)
                self.stop_idle(time.monotonic() - PARTY_IDLE_S)
        return supernode.returncode if supernode is not None else 0

    def stop_idle(self, before: float) -> None:
        """Stop the party processes whose last task began before ``before`` (monotonic seconds)."""
        for run_id, party in list(self.parties.items()):
            if party.last_task < before:
                log.info("stopping the resident party process of run %d: no task for %.0f s", run_id, PARTY_IDLE_S)
                party.stop()
                del self.parties[run_id]

    def stop(self) -> None:
        for party in self.parties.values():
            party.stop()
        self.parties.clear()


def _idle_poll_interval() -> float:
    raw = os.environ.get(POLL_ENVIRONMENT, "0.25")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{POLL_ENVIRONMENT}={raw!r}: expected seconds (0.01 to 60)") from None
    return min(60.0, max(0.01, value))


def _die_with_parent() -> None:
    """In a child: get SIGTERM when the node process dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_node(address: str, root_certificates: str | None, supernode_command: list[str]) -> int:
    """Start the SuperNode (``--isolation process``) and serve its ClientApp tasks until it exits."""
    node = Node(address, root_certificates)
    supernode = subprocess.Popen(supernode_command, preexec_fn=_die_with_parent)  # noqa: PLW1509
    log.info("resident parties: SuperNode %d, Runtime API %s (flwr %s)", supernode.pid, address,
             importlib.metadata.version("flwr"))
    try:
        with _sigterm_as_exit():
            return node.serve(supernode)
    finally:
        node.stop()
        if supernode.poll() is None:
            supernode.terminate()
            try:
                supernode.wait(timeout=10)
            except subprocess.TimeoutExpired:
                supernode.kill()
                supernode.wait(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distgan.runtime.flower.resident", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    node = sub.add_parser("node", help="start a SuperNode (the command after --) and serve its ClientApp tasks")
    party = sub.add_parser("party", help="(started by node) the resident party of one run")
    party.add_argument("--run-id", type=int, required=True)
    party.add_argument("--parent-pid", type=int)
    for role in (node, party):
        role.add_argument("--runtime-api", required=True, metavar="HOST:PORT", help="the SuperNode's Runtime API")
        role.add_argument("--root-certificates", metavar="CA", help="CA of a Runtime API that speaks TLS")
    node.add_argument("supernode", nargs=argparse.REMAINDER, help="-- flower-supernode ... --isolation process")
    tuned = sub.add_parser("supernode", help=f"(started by node, when {SUPERNODE_POLL_ENVIRONMENT} is set) "
                                             "flower-supernode with shorter waits")
    tuned.add_argument("--poll", type=float, required=True, metavar="S")
    tuned.add_argument("arguments", nargs=argparse.REMAINDER, help="-- flower-supernode's arguments")
    args = parser.parse_args(argv)
    if args.role == "supernode":
        run_tuned_supernode(args.poll, args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments)
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s distgan resident: %(message)s"))
    log.addHandler(handler)
    log.setLevel(os.environ.get(RESIDENT_LOG_ENVIRONMENT, "INFO").upper())  # DEBUG: each task's times
    log.propagate = False
    if args.role == "node":
        command = args.supernode[1:] if args.supernode[:1] == ["--"] else args.supernode
        if not command:
            parser.error("node: give the flower-supernode command after --")
        code = run_node(args.runtime_api, args.root_certificates, command)
        if code < 0:  # the SuperNode died of a signal: so does this process (supervise.py reads it)
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        return code
    if args.parent_pid is not None:
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(args.parent_pid)
    # The node process reads this process's stdout for "done" lines: everything else goes to stderr.
    done = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(KeyboardInterrupt):
        serve_run(args.run_id, args.runtime_api, args.root_certificates, sys.stdin, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())

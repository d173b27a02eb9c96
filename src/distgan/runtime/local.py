"""Parties on this machine: in this process (default) or spread over worker processes.

With ``--workers N`` each worker process builds its own parties, reading their shares itself, and
answers requests over a pipe; requests to different workers run at the same time, so N parties
use N cores. Worker k hosts parties k, k+N, k+2N, ...

A worker that dies (killed, out of memory) loses its parties: they are marked failed and the run
goes on without them, or stops (``runtime.on_party_failure``). With ``"wait"`` the worker is
started again (at most ``MAX_WORKER_RESTARTS`` times), its parties reload the state they saved
last, and the request they missed is sent again: their progress since that checkpoint is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from distgan import protocol as p
from distgan.assembly import build_party, plan_data
from distgan.config import Config
from distgan.parties import Parties, PartyFailedError, PartyLostError
from distgan.party import Party

log = logging.getLogger("distgan")

MAX_WORKER_RESTARTS = 3


def build_local_parties(config: Config, run_dir: Path, pooled: bool,
                        expectations: p.Expectations | None = None) -> Parties:
    count = 1 if pooled else config.data.parties
    if config.runtime.workers == 0:
        plan = plan_data(config)
        parties = [build_party(config, plan, j, run_dir, pooled) for j in range(count)]
        return InProcessParties(parties, expectations, config.runtime.on_party_failure == "stop")
    workers = WorkerParties(config, run_dir, pooled, count, expectations)
    workers.restart_lost = config.runtime.on_party_failure == "wait"
    return workers


class InProcessParties(Parties):
    def __init__(self, parties: list[Party], expectations: p.Expectations | None = None,
                 stop_on_failure: bool = False) -> None:
        super().__init__(len(parties), expectations, stop_on_failure)
        self._parties = parties

    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        outcomes: dict[int, p.Message | BaseException] = {}
        for party, request in requests.items():
            try:
                outcomes[party] = self._parties[party].handle(request)
            except Exception as error:  # noqa: BLE001  a party's fault must not take the coordinator down
                outcomes[party] = error
        return outcomes


class RemotePartyError(RuntimeError):
    """An exception raised inside a worker process, with its traceback text."""


INLINE_BYTES = 1 << 20
"""Messages whose tensors total less travel inline through the pipe; larger ones in one shared-memory
segment. Measured (benchmarks/throughput.py, docs in README): sending tensors as they are goes through
``torch.multiprocessing``'s reductions, one shared-memory segment and one file descriptor handed over a
socket *per tensor* -- ~5 ms for a 200 kB feedback, ~100 ms for G with its Adam state (24 tensors) --
where inline bytes take ~1.5 ms and one segment per message ~20 ms."""

WIRE_DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in
               (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8)}
"""Tensor types a message may carry across a pipe (validation then refuses all but float32 / int64)."""

Wire = tuple[str, list[tuple[str, str, tuple[int, ...], int]], dict[str, p.Scalar], Any]
"""A message on a pipe: kind, tensor layout (name, dtype, shape, byte offset), scalars, payload."""


def to_wire(message: p.Message) -> Wire:
    """A message as one buffer: its tensors packed at 8-byte-aligned offsets into a bytearray (small
    messages) or a shared-memory tensor (large ones), so a message costs one transfer, not one per tensor."""
    kind, tensors, scalars = p.encode(message)
    layout, end = [], 0
    for name, tensor in tensors.items():
        layout.append((name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), end))
        end += -(-tensor.numel() * tensor.element_size() // 8) * 8
    payload: Any
    if end >= INLINE_BYTES:
        buffer = payload = torch.empty(end, dtype=torch.uint8).share_memory_()
    else:
        payload = bytearray(end)
        buffer = torch.frombuffer(payload, dtype=torch.uint8) if end else torch.empty(0, dtype=torch.uint8)
    for (_, _, _, start), tensor in zip(layout, tensors.values()):
        raw = tensor.reshape(-1).view(torch.uint8)
        buffer[start:start + raw.numel()].copy_(raw)
    return kind, layout, scalars, payload


def from_wire(wire: Wire) -> p.Message:
    """The message of :func:`to_wire` (its tensors are views of the one buffer); decoded as any transport's."""
    kind, layout, scalars, payload = wire
    buffer = payload if isinstance(payload, torch.Tensor) else \
        torch.frombuffer(payload, dtype=torch.uint8) if len(payload) else torch.empty(0, dtype=torch.uint8)
    tensors = {}
    for name, dtype_name, shape, start in layout:
        dtype = WIRE_DTYPES.get(dtype_name)
        if dtype is None:
            raise p.ProtocolError(f"{kind}.{name}: tensors of dtype {dtype_name} cannot travel")
        size = torch.Size(shape).numel() * dtype.itemsize
        tensors[name] = buffer[start:start + size].view(dtype).reshape(shape)
    return p.decode(kind, tensors, scalars)


def _worker_main(config_dict: dict[str, Any], run_dir: str, pooled: bool, party_ids: list[int],
                 threads: int, connection: Connection) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the coordinator alone decides how the run
    # ends (it finishes the round and checkpoints, which needs these parties alive).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    config = Config.from_dict(config_dict)
    try:
        plan = plan_data(config)
        parties = {j: build_party(config, plan, j, Path(run_dir), pooled) for j in party_ids}
        connection.send(("ready", torch.get_num_threads()))  # what the worker really runs with, for the log
    except Exception as error:  # noqa: BLE001  reported to the coordinator, which raises it
        connection.send(("fatal", f"{type(error).__name__}: {error}"))
        return
    while True:
        try:
            batch = connection.recv()
        except EOFError:
            return
        if batch is None:
            return
        outcomes: dict[int, Any] = {}
        for party, wire in batch.items():
            try:
                outcomes[party] = to_wire(parties[party].handle(from_wire(wire)))
            except Exception as error:  # noqa: BLE001  becomes that party's reply, as in-process
                outcomes[party] = RemotePartyError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        connection.send(("replies", outcomes))


def shared_cores(workers: int) -> int:
    """Threads per worker when none are set: the cores this process may use (a container or taskset may
    allow fewer than the machine has) shared out, since N workers with all of them each would fight
    over the same cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


class WorkerParties(Parties):
    """Parties in ``runtime.workers`` processes (spawned, so each reads its own data)."""

    def __init__(self, config: Config, run_dir: Path, pooled: bool, count: int,
                 expectations: p.Expectations | None = None) -> None:
        super().__init__(count, expectations, config.runtime.on_party_failure == "stop")
        workers = min(config.runtime.workers, count)
        self._threads = config.runtime.worker_threads or shared_cores(workers)
        self._context = mp.get_context("spawn")
        self._start_args = (config.to_dict(), str(run_dir), pooled)
        self._owner = {j: j % workers for j in range(count)}
        self._connections: list[Connection] = [None] * workers  # type: ignore[list-item]
        self._processes: list[Any] = [None] * workers
        self._restarts = [0] * workers
        for worker in range(workers):
            self._spawn(worker)
        for worker in range(workers):
            status, detail = self._receive(worker)
            if status != "ready":
                self.close()
                raise PartyFailedError(f"worker {worker} could not start its parties: {detail}")
            log.info("worker %d: parties %s, %s torch thread(s)", worker, self._hosted(worker), detail)

    def _hosted(self, worker: int) -> list[int]:
        return [j for j in range(self.count) if self._owner[j] == worker]

    def _spawn(self, worker: int) -> None:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, daemon=True,
                                        args=(*self._start_args, self._hosted(worker), self._threads, theirs))
        process.start()
        theirs.close()
        self._connections[worker], self._processes[worker] = ours, process

    def _restart(self, parties: list[int]) -> list[int]:
        """Start the dead workers of ``parties`` again; their parties reload their last saved state."""
        ready: list[int] = []
        for worker in sorted({self._owner[j] for j in parties}):
            process = self._processes[worker]
            if process.is_alive() or self._restarts[worker] >= MAX_WORKER_RESTARTS:
                continue
            self._restarts[worker] += 1
            hosted = self._hosted(worker)
            log.warning("%s: restarting it (%d of %d)", self._death(worker), self._restarts[worker],
                        MAX_WORKER_RESTARTS)
            self._connections[worker].close()
            self._spawn(worker)
            status, detail = self._receive(worker)
            if status != "ready":
                log.warning("worker %d did not come back: %s", worker, detail)
                continue
            loads = {j: p.LoadState(self.saved_rounds[j]) for j in hosted if j in self.saved_rounds}
            outcomes = self._dispatch(loads) if loads else {}
            refused = {j: o for j, o in outcomes.items() if not isinstance(o, p.Ack)}
            if refused:
                log.warning("worker %d came back but its parties could not reload their state: %s", worker,
                            "; ".join(f"party {j}: {o}" for j, o in refused.items()))
                continue
            log.warning("worker %d is back: parties %s reloaded their state of rounds %s", worker, hosted,
                        [self.saved_rounds.get(j, 0) for j in hosted])
            ready.extend(j for j in parties if j in hosted)
        return ready

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def _receive(self, worker: int) -> tuple[str, Any]:
        connection, process = self._connections[worker], self._processes[worker]
        while not connection.poll(0.05):
            # A worker that exits cleanly may have left its last words in the pipe.
            if not process.is_alive() and not connection.poll(0):
                return "dead", self._death(worker)
        try:
            return connection.recv()
        except (EOFError, OSError):
            return "dead", self._death(worker)

    def _death(self, worker: int) -> str:
        process = self._processes[worker]
        process.join(timeout=1)
        code = process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else \
            f"exited with code {code}"
        return f"worker process {process.pid} (parties {self._hosted(worker)}) {how}"

    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        batches: dict[int, dict[int, Wire]] = {}
        wires: dict[int, Wire] = {}  # one encoding per request object (request_all sends one to every party)
        for party, request in requests.items():
            if id(request) not in wires:
                wires[id(request)] = to_wire(request)
            batches.setdefault(self._owner[party], {})[party] = wires[id(request)]
        sent = []
        outcomes: dict[int, p.Message | BaseException] = {}
        for worker, batch in batches.items():
            try:
                self._connections[worker].send(batch)
                sent.append(worker)
            except (BrokenPipeError, OSError) as error:
                outcomes.update({j: PartyLostError(f"worker unreachable ({error})") for j in batch})
        for worker in sent:
            status, detail = self._receive(worker)
            if status == "replies":
                for party, outcome in detail.items():
                    try:
                        outcomes[party] = outcome if isinstance(outcome, BaseException) else from_wire(outcome)
                    except p.ProtocolError as error:
                        outcomes[party] = error
            else:
                outcomes.update({j: PartyLostError(detail) for j in batches[worker]})
        return outcomes

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self._connections, self._processes = [], []

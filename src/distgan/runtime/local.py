"""Parties on this machine: in this process (default) or spread over worker processes.

With ``--workers N`` each worker process builds its own parties, reading their shares itself, and
answers requests over a pipe; requests to different workers run at the same time, so N parties
use N cores. Worker k hosts parties k, k+N, k+2N, ...
"""

from __future__ import annotations

import os
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
from distgan.party import Party
from distgan.runtime.base import Parties, PartyFailedError


def build_local_parties(config: Config, run_dir: Path, pooled: bool, expectations: p.Expectations) -> Parties:
    count = 1 if pooled else config.data.parties
    if config.runtime.workers == 0:
        plan = plan_data(config)
        parties = [build_party(config, plan, j, run_dir, pooled) for j in range(count)]
        return InProcessParties(parties, expectations, config.runtime.on_party_failure == "stop")
    return WorkerParties(config, run_dir, pooled, count, expectations)


class InProcessParties(Parties):
    def __init__(self, parties: list[Party], expectations: p.Expectations, stop_on_failure: bool = False) -> None:
        super().__init__(len(parties), expectations, stop_on_failure)
        self._parties = parties

    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        outcomes: dict[int, p.Message | BaseException] = {}
        for party, request in requests.items():
            try:
                outcomes[party] = self._parties[party].handle(request)
            except Exception as error:  # a party's fault must not take the coordinator down
                outcomes[party] = error
        return outcomes


class RemotePartyError(RuntimeError):
    """An exception raised inside a worker process, with its traceback text."""


def _worker_main(config_dict: dict[str, Any], run_dir: str, pooled: bool, party_ids: list[int],
                 threads: int, connection: Connection) -> None:
    torch.set_num_threads(threads)
    config = Config.from_dict(config_dict)
    try:
        plan = plan_data(config)
        parties = {j: build_party(config, plan, j, Path(run_dir), pooled) for j in party_ids}
        connection.send(("ready", None))
    except Exception as error:
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
        for party, request in batch.items():
            try:
                outcomes[party] = parties[party].handle(request)
            except Exception as error:
                outcomes[party] = RemotePartyError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        connection.send(("replies", outcomes))


class WorkerParties(Parties):
    """Parties in ``runtime.workers`` processes (spawned, so each reads its own data)."""

    def __init__(self, config: Config, run_dir: Path, pooled: bool, count: int,
                 expectations: p.Expectations) -> None:
        super().__init__(count, expectations, config.runtime.on_party_failure == "stop")
        workers = min(config.runtime.workers, count)
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = mp.get_context("spawn")
        self._owner = {j: j % workers for j in range(count)}
        self._connections: list[Connection] = []
        self._processes: list[Any] = []
        for worker in range(workers):
            ours, theirs = context.Pipe()
            ids = [j for j in range(count) if self._owner[j] == worker]
            process = context.Process(target=_worker_main, daemon=True,
                                      args=(config.to_dict(), str(run_dir), pooled, ids, threads, theirs))
            process.start()
            theirs.close()
            self._connections.append(ours)
            self._processes.append(process)
        for worker, connection in enumerate(self._connections):
            status, detail = self._receive(worker)
            if status != "ready":
                self.close()
                raise PartyFailedError(f"worker {worker} could not start its parties: {detail}")

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def _receive(self, worker: int) -> tuple[str, Any]:
        connection, process = self._connections[worker], self._processes[worker]
        while not connection.poll(0.05):
            if not process.is_alive():
                return "dead", f"worker process {process.pid} exited with code {process.exitcode}"
        try:
            return connection.recv()
        except (EOFError, OSError) as error:
            return "dead", f"worker process {process.pid}: connection lost ({error})"

    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        batches: dict[int, dict[int, p.Message]] = {}
        for party, request in requests.items():
            batches.setdefault(self._owner[party], {})[party] = request
        sent = []
        outcomes: dict[int, p.Message | BaseException] = {}
        for worker, batch in batches.items():
            try:
                self._connections[worker].send(batch)
                sent.append(worker)
            except (BrokenPipeError, OSError) as error:
                outcomes.update({j: PartyFailedError(f"worker unreachable ({error})") for j in batch})
        for worker in sent:
            status, detail = self._receive(worker)
            if status == "replies":
                outcomes.update(detail)
            else:
                outcomes.update({j: PartyFailedError(detail) for j in batches[worker]})
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

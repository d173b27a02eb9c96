"""A real Flower federation on this machine: one SuperLink, N SuperNodes, distgan's app.

``distgan flower local`` uses it. By default with TLS (a private CA and a SuperLink certificate
for 127.0.0.1, made here) and SuperNode authentication (one key per node, made here and
registered with the SuperLink before the node starts). Every process it starts runs in a session
of its own; :meth:`LocalFederation.stop` ends them by PID (SIGTERM to the process, then to its
process group, then SIGKILL), also on Ctrl-C, SIGTERM and failure.

Working files go to ``RUN_DIR/flower/``: ``tls/`` and ``keys/`` (key material), ``logs/`` (one log
per process), ``app/`` (the Flower app), ``home/`` (one ``FLWR_HOME`` per process).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from distgan import run_folder
from distgan.config import Config
from distgan.runtime.flower import FLOWER_ENVIRONMENT
from distgan.runtime.flower.apps import write_app
from distgan.runtime.flower.parties import FlowerSettings
from distgan.runtime.flower.resident import resident_supernode_command
from distgan.runtime.flower.tls import NodeKey, ServerCertificates, make_node_key, make_server_certificates

if TYPE_CHECKING:
    from typing_extensions import Self

HOST = "127.0.0.1"
CONNECTION = "distgan-local"
STOP_GRACE_S = 10.0


class FlowerLaunchError(RuntimeError):
    """A Flower process could not start, or the run did not complete."""


def flower_executable(name: str) -> str:
    """The flwr / flower-* command of this Python environment."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    import shutil

    found = shutil.which(name)
    if found is None:
        raise FlowerLaunchError(f"{name} not found: install Flower with  pip install 'distgan[flower]'")
    return found


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def node_config_text(values: Mapping[str, int | float | str]) -> str:
    """``--node-config`` syntax: ``key=value`` pairs, strings as TOML literal strings."""
    parts = []
    for key, value in values.items():
        if isinstance(value, str):
            if "'" in value or "\n" in value:
                raise ValueError(f"node config {key}={value!r}: a value with a quote or newline cannot be passed")
            parts.append(f"{key}='{value}'")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class LocalFederation:
    """SuperLink and SuperNodes on loopback; a context manager that stops all it started."""

    work: Path
    secure: bool = True
    """TLS and SuperNode authentication (False: plain HTTP, any node may join)."""
    startup_timeout_s: float = 90.0
    resident: bool = True
    """SuperNodes run resident party processes (no process per message) where Flower allows."""
    started: list[Started] = field(default_factory=list)
    port: int = 0
    certificates: ServerCertificates | None = None

    def __post_init__(self) -> None:
        self.work = self.work.resolve()
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- processes --------------------------------------------------------------------------------
    def environment(self, home: str, **extra: str) -> dict[str, str]:
        env = {**os.environ, **FLOWER_ENVIRONMENT, "FLWR_HOME": str(self.work / "home" / home), **extra}
        Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
        return env

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Started:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log_file:
            log_file.write(("$ " + " ".join(command) + "\n").encode())
            log_file.flush()
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        started = Started(name, process, log_path)
        self.started.append(started)
        return started

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.started]

    def stop(self) -> None:
        """End every process started here and its children (SuperExec, ServerApp and ClientApp
        processes share the process group of the process we started, whose id is its PID):
        SIGTERM to each group, then SIGKILL to any still alive after a grace period."""
        for item in reversed(self.started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(item.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(
                item.process.poll() is None or _group_alive(item.process.pid) for item in self.started):
            time.sleep(0.1)
        for item in self.started:
            if item.process.poll() is None or _group_alive(item.process.pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(item.process.pid, signal.SIGKILL)
                _wait_group(item.process.pid, 3.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                item.process.wait(timeout=5)
        # The SuperLink starts its SuperExec in a session of its own (Flower detaches it and lets
        # it notice its parent's death, 0.2 s polls): end it and anything else still running with
        # a FLWR_HOME of this federation.
        _end_processes(_processes_with_home_under(self.work / "home"), STOP_GRACE_S)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the SuperLink ----------------------------------------------------------------------------
    def start_superlink(self) -> None:
        self.port = free_port()
        command = [flower_executable("flower-superlink"), "--host", HOST, "--port", str(self.port),
                   "--disable-runtime-dependency-installation",
                   "--log-file", str(self.logs / "superlink-flower.log")]
        if self.secure:
            self.certificates = make_server_certificates(self.work / "tls", [HOST, "localhost"])
            command += ["--ssl-ca-certfile", str(self.certificates.ca_certificate),
                        "--ssl-certfile", str(self.certificates.certificate),
                        "--ssl-keyfile", str(self.certificates.key), "--enable-supernode-auth"]
        else:
            command.append("--insecure")
        link = self.start("superlink", command, self.environment("superlink"))
        self._write_cli_config()
        _wait_for_port(HOST, self.port, self.startup_timeout_s, link)

    def _write_cli_config(self) -> None:
        home = Path(self.environment("cli")["FLWR_HOME"])
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{HOST}:{self.port}"']
        if self.certificates is not None:
            lines.append(f"root-certificates = {json.dumps(str(self.certificates.ca_certificate))}")
        else:
            lines.append("insecure = true")
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *arguments: str, timeout: float = 120.0) -> str:
        """Run the ``flwr`` CLI against this SuperLink; its output, or FlowerLaunchError."""
        result = subprocess.run([flower_executable("flwr"), *arguments], check=False, env=self.environment("cli"),
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        with (self.logs / "flwr-cli.log").open("a") as log_file:
            log_file.write(f"$ flwr {' '.join(arguments)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            raise FlowerLaunchError(f"flwr {arguments[0]} failed (exit {result.returncode}): "
                                    f"{(result.stdout + result.stderr).strip()[-800:]}")
        return result.stdout

    # -- SuperNodes -------------------------------------------------------------------------------
    def make_keys(self, count: int) -> list[NodeKey]:
        return [make_node_key(self.work / "keys", f"supernode-{j}") for j in range(count)]

    def register(self, keys: list[NodeKey]) -> list[int]:
        """Register public keys with the SuperLink (in parallel); returns the node ids it assigns."""
        processes = [subprocess.Popen([flower_executable("flwr"), "supernode", "register", str(key.public_key),
                                       CONNECTION, "--format", "json"], env=self.environment("cli"),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      stdin=subprocess.DEVNULL, start_new_session=True) for key in keys]
        node_ids = []
        for key, process in zip(keys, processes):
            output, _ = process.communicate(timeout=120)
            with (self.logs / "flwr-cli.log").open("a") as log_file:
                log_file.write(f"$ flwr supernode register {key.public_key}\n{output}\n")
            match = re.search(r'"node-id":\s*(\d+)', output)
            if process.returncode != 0 or match is None:
                raise FlowerLaunchError(f"registering {key.public_key.name} failed: {output.strip()[-800:]}")
            node_ids.append(int(match.group(1)))
        return node_ids

    def start_supernode(self, name: str, node_config: dict[str, int | str], key: NodeKey | None,
                        threads: int | None = None) -> Started:
        runtime_port = free_port()
        command = [flower_executable("flower-supernode"), "--superlink", f"{HOST}:{self.port}",
                   "--host", HOST, "--port", str(runtime_port), "--node-config", node_config_text(node_config)]
        if self.certificates is not None:
            command += ["--root-certificates", str(self.certificates.ca_certificate)]
        else:
            command.append("--insecure")
        if key is not None:
            command += ["--auth-supernode-private-key", str(key.private_key)]
        if self.resident:
            command = resident_supernode_command(command, f"{HOST}:{runtime_port}")
        extra = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        return self.start(name, command, self.environment(name, **extra))

    # -- runs ----------------------------------------------------------------------------------------
    def run_app(self, app_dir: Path, watch: Callable[[], None] | None = None) -> dict[str, Any]:
        """Submit the app, wait until its run ends (calling ``watch`` twice a second); the run's
        ``flwr ls`` record. Raises FlowerLaunchError when the SuperLink dies."""
        with (self.logs / "serverapp.log").open("ab") as log_file:
            submit = subprocess.Popen([flower_executable("flwr"), "run", str(app_dir), CONNECTION, "--stream"],
                                      env=self.environment("cli"), stdout=log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append(Started("flwr-run", submit, self.logs / "serverapp.log"))
        link = self.started[0]
        while submit.poll() is None:
            if link.process.poll() is not None:
                raise FlowerLaunchError(f"the SuperLink exited (code {link.process.returncode}); "
                                        f"see {link.log_path}")
            if watch is not None:
                watch()
            time.sleep(0.5)
        if watch is not None:
            watch()
        text = (self.logs / "serverapp.log").read_text(errors="replace")
        match = re.search(r"Successfully started run (\d+)", text)
        if match is None:
            raise FlowerLaunchError(f"flwr run did not start the run: {text.strip()[-800:]}")
        listing = json.loads(self.flwr("ls", CONNECTION, "--run-id", match.group(1), "--format", "json"))
        runs = listing.get("runs") or [{}]
        return dict(runs[0])


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    if not Path("/proc").is_dir():  # no procfs: ask the kernel (zombies count as alive there)
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return False


def _processes_with_home_under(folder: Path) -> list[int]:
    """Live (non-zombie) processes whose FLWR_HOME lies under ``folder``."""
    marker = f"FLWR_HOME={folder}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if marker in (proc / "environ").read_bytes() and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(proc.name))
    return found


def _end_processes(pids: list[int], grace_s: float) -> None:
    """SIGTERM to ``pids``, SIGKILL to those still alive after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (alive := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_group(pgid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _wait_for_port(host: str, port: int, timeout: float, owner: Started) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if owner.process.poll() is not None:
            raise FlowerLaunchError(f"{owner.name} exited with code {owner.process.returncode} while starting; "
                                    f"log {owner.log_path}:\n{tail(owner.log_path)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise FlowerLaunchError(f"{owner.name} did not listen on {host}:{port} within {timeout:g} s; see {owner.log_path}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the federation (Ctrl-C already does)."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LogFollower:
    """Echo the lines a file gains (the run's log.txt) to a stream."""

    def __init__(self, path: Path, stream: IO[str] | None) -> None:
        self.path, self.stream, self.offset = path, stream, 0

    def __call__(self) -> None:
        if self.stream is None or not self.path.is_file():
            return
        with self.path.open("rb") as log_file:
            log_file.seek(self.offset)
            chunk = log_file.read()
        complete = chunk.rfind(b"\n") + 1
        if complete:
            self.offset += complete
            self.stream.write(chunk[:complete].decode(errors="replace"))
            self.stream.flush()


def run_local(config: Config, run_dir: Path, party_data: list[str] | None = None, secure: bool = True,
              resume: bool = False, settings: FlowerSettings | None = None,
              echo: IO[str] | None = sys.stderr, resident: bool = True) -> dict[str, Any]:
    """Train ``config`` on a loopback federation with one SuperNode per party; returns the Flower
    run record (status ``finished:completed``) or raises FlowerLaunchError. ``party_data``: one
    data spec per party (its node's ``data-dir``); None splits ``config.data.source`` as
    ``distgan train`` does. ``resident``: resident party processes on the SuperNodes (False:
    Flower's ClientApp process per message)."""
    from distgan.strategies import STRATEGIES

    count = 1 if STRATEGIES.get(config.strategy.name).pooled_data else config.data.parties
    if party_data is not None and len(party_data) != count:
        raise ValueError(f"--party-data given {len(party_data)} times for {count} parties")
    run_dir = run_dir.resolve()
    threads = max(1, (os.cpu_count() or 1) // count)
    with terminate_on_sigterm(), LocalFederation(run_dir / "flower", secure=secure,
                                                         resident=resident) as federation:
        federation.start_superlink()
        keys = federation.make_keys(count) if secure else [None] * count
        if secure:
            federation.register([key for key in keys if key is not None])
        nodes = []
        for j, key in enumerate(keys):
            node_config: dict[str, int | str] = {"partition-id": j, "num-partitions": config.data.parties,
                                                 "state-dir": str(run_dir)}
            if party_data is not None:
                node_config["data-dir"] = party_data[j]
            nodes.append(federation.start_supernode(f"supernode-{j}", node_config, key, threads))
        app_dir = federation.work / "app"
        write_app(app_dir, config, run_dir, resume=resume, settings=settings)
        follower = LogFollower(run_dir / run_folder.LOG, echo)
        if resume and follower.path.is_file():
            follower.offset = follower.path.stat().st_size

        def watch() -> None:
            follower()
            if (run_dir / run_folder.STATS).exists():
                return  # training runs: a node that dies now is the ServerApp's to handle
            for node in nodes:
                if node.process.poll() is not None:
                    raise FlowerLaunchError(f"{node.name} exited with code {node.process.returncode} before "
                                            f"training started; log {node.log_path}:\n{tail(node.log_path)}")

        record = federation.run_app(app_dir, watch)
        if record.get("status") != "finished:completed":
            raise FlowerLaunchError(f"the Flower run ended as {record.get('status')!r}: "
                                    f"{record.get('status-details') or ''} (logs in {federation.logs})")
        return record

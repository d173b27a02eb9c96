"""``distgan flower supernode``: run ``flower-supernode`` the way a data holder's host needs it.

- **A quick restart rejoins.** After a SuperNode dies without saying goodbye (``kill -9``, a power
  cut), the SuperLink keeps counting it online until its heartbeat patience runs out (Flower 1.42:
  2 × the 30 s heartbeat interval after its last heartbeat) and refuses to activate a node it
  thinks is online. The restarted ``flower-supernode`` then exits with code 305 ("Failed to
  activate SuperNode"), the code an unregistered key gets too. Here a 305 that comes within
  seconds of the start is retried every :data:`RETRY_EVERY_S` until :data:`ACTIVATION_PATIENCE_S`
  have passed; only then is it reported, as an unregistered key.
- **Nothing left behind.** ``flower-supernode`` runs in a process group of its own, which its
  SuperExec and ClientApp processes join; when it exits (or is killed) the whole group is ended, so
  no ``flwr-clientapp`` is orphaned and keeps a core busy. SIGTERM / SIGINT to this process go to
  the node, and the node dies with this process (``PR_SET_PDEATHSIG``).
- **Exit codes that say what happened** (:data:`EXIT_MEANINGS`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, BinaryIO

ACTIVATION_REFUSED = 305
"""Flower's exit code for a refused activation. Flower prints it ("Exit Code: 305") and exits with
status 1, as for every error, so it is read from the node's output."""
EXIT_CODE_LINE = re.compile(rb"Exit Code: (\d+)")
ACTIVATION_PATIENCE_S = 75.0
"""How long a refused activation is retried: the SuperLink's heartbeat patience (60 s) plus margin."""
RETRY_EVERY_S = 5.0
QUICK_EXIT_S = 30.0
"""A 305 later than this after the start is not an activation refusal at start-up: not retried."""
STOP_GRACE_S = 10.0

EXIT_MEANINGS = {
    0: "the SuperNode stopped",
    ACTIVATION_REFUSED: ("the SuperLink refused to activate this SuperNode: its public key is not registered "
                         "(flwr supernode register KEY.pub CONNECTION on the coordinator's host), or the "
                         "SuperLink still counts this node online from before a restart (it does for up to 60 s "
                         "after the node's last heartbeat; distgan retried for {patience:.0f} s)"),
    -signal.SIGKILL: "the SuperNode was killed (SIGKILL)",
    -signal.SIGTERM: "the SuperNode was stopped (SIGTERM)",
}


def exit_meaning(code: int) -> str:
    text = EXIT_MEANINGS.get(code)
    if text is None:
        return f"flower-supernode exited with code {code}; its log above says why"
    return text.format(patience=ACTIVATION_PATIENCE_S)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervising process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()  # a process group of its own, which SuperExec and ClientApps join


def end_group(pgid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to every process of group ``pgid``, SIGKILL to what is left after ``grace_s``."""
    from distgan.runtime.flower.local import _group_alive, _wait_group

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    _wait_group(pgid, grace_s)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _wait_group(pgid, 3.0)


def _relay(child: subprocess.Popen[bytes], output: BinaryIO) -> int:
    """Copy the child's output through until it exits, then end its process group (its SuperExec and
    ClientApps, which also hold the output pipe); Flower's exit code when it printed one, else the
    process's (negative: killed by that signal)."""
    printed: list[int] = []

    def copy() -> None:
        assert child.stdout is not None
        for line in iter(child.stdout.readline, b""):
            output.write(line)
            output.flush()
            if (match := EXIT_CODE_LINE.search(line)) is not None:
                printed.append(int(match.group(1)))

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    code = child.wait()
    end_group(child.pid)
    reader.join(timeout=5.0)
    return printed[-1] if printed and code != 0 else code


def supervise(command: list[str], env: dict[str, str], echo: IO[str] = sys.stderr,
              sleep: Callable[[float], None] = time.sleep, output: BinaryIO | None = None) -> int:
    """Run ``command`` (a flower-supernode command line) until it ends for good; its exit status.
    ``output`` receives the node's output (default: this process's stdout)."""
    output = output or sys.stdout.buffer
    first_try = time.monotonic()
    child: subprocess.Popen[bytes] | None = None
    stopping: list[int] = []

    def forward(signum: int, frame: object) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)  # noqa: PLW1509
            code = _relay(child, output)  # its SuperExec and ClientApps end with it
            quick = time.monotonic() - started < QUICK_EXIT_S
            if code == ACTIVATION_REFUSED and quick and not stopping and \
                    time.monotonic() - first_try < ACTIVATION_PATIENCE_S:
                print(f"distgan flower supernode: activation refused (exit 305); the SuperLink may still count "
                      f"this node online from before a restart: retrying in {RETRY_EVERY_S:g} s", file=echo)
                echo.flush()
                sleep(RETRY_EVERY_S)
                if not stopping:
                    continue
                code = -stopping[0]
            print(f"distgan flower supernode: exit {code}: {exit_meaning(code)}", file=echo)
            return code if 0 <= code < 256 else (128 - code if code < 0 else 1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

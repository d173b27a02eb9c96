"""Faults with real process kills: a worker (party process) and the coordinator itself, on fake data.

* a worker killed with SIGKILL mid-round: the run goes on without its party (default), stops with
  a clear error (``runtime.on_party_failure=stop``), or restarts it from its last saved state (``wait``);
* the coordinator (a real ``distgan train`` process) killed with SIGKILL at a random moment, or just
  after the parties saved their state but before its own checkpoint record: ``--resume`` gives
  exactly the result of an uninterrupted run;
* Ctrl-C (SIGINT to the whole process group, as a terminal sends it): the round finishes, a final
  checkpoint and the end-of-run outputs are written, the exit code is 130, and ``--resume`` goes on.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan import protocol as p
from distgan import training
from distgan.cli import main
from distgan.config import Config
from distgan.training import train
from tests.conftest import tiny_config
from tests.test_reliability import TINY, generator_weights, losses, records, run_cli

CLI = [sys.executable, "-c", "import sys; from distgan.cli import main; sys.exit(main())"]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}  # as this process (tests/conftest.py): same arithmetic
REFERENCE_ROUNDS = 24


def start(*argv: str, **options) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "train", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENVIRONMENT, **options)


def stats_lines(run_dir: Path) -> int:
    path = run_dir / "stats.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def wait_for_rounds(run_dir: Path, rounds: int, process: subprocess.Popen | None = None, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while stats_lines(run_dir) < rounds:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended before round {rounds}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"round {rounds} not reached within {limit_s} s")
        time.sleep(0.005)


def resumed_from(run_dir: Path) -> int:
    line = [line for line in (run_dir / "log.txt").read_text().splitlines() if "resumed from the checkpoint" in line]
    return int(line[-1].rsplit(" ", 1)[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce (checkpoint every round)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *TINY, "--rounds", str(REFERENCE_ROUNDS), "--set", "output.checkpoint_every=1",
                 "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert losses(run_dir) == losses(reference)
    assert torch.equal(generator_weights(run_dir), generator_weights(reference))


# -- the coordinator killed -------------------------------------------------------------------------
def test_coordinator_killed_at_a_random_moment_resumes_to_the_same_result(tmp_path, reference):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    process = start(*TINY, "--rounds", str(REFERENCE_ROUNDS), "--set", "output.checkpoint_every=1",
                    "--out", str(run_dir), "--quiet")
    wait_for_rounds(run_dir, rng.randint(2, 8), process)
    time.sleep(rng.uniform(0, 0.03))  # anywhere in the next round or checkpoint
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    seen = stats_lines(run_dir)
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert resumed_from(run_dir) >= seen - 1, f"lost more than one checkpoint interval (seed {seed})"
    assert_same_run(run_dir, reference)


KILL_AFTER_PARTIES_SAVED = """
import os, signal, sys
from pathlib import Path
from distgan import protocol as p
from distgan.config import Config
from distgan import training
from distgan.training import train

config, run_dir, kill_round = Config.load(Path(sys.argv[1])), Path(sys.argv[2]), int(sys.argv[3])

def kill_after_parties_saved(party, request, reply):
    # Every party has written its state of this round; the coordinator has not written its own yet.
    if isinstance(request, p.SaveState) and request.round == kill_round:
        os.kill(os.getpid(), signal.SIGKILL)

def arm(coordinator, round_number, record):
    if round_number == 1:
        coordinator.parties.observers.append(kill_after_parties_saved)

run_dir.mkdir()
train(config, run_dir, quiet=True, round_hooks=[arm])
"""


def test_coordinator_killed_between_party_and_coordinator_checkpoint(tmp_path, reference):
    run_dir, kill_round = tmp_path / "run", 5
    result = subprocess.run([sys.executable, "-c", KILL_AFTER_PARTIES_SAVED, str(reference / "config.json"),
                             str(run_dir), str(kill_round)], capture_output=True, text=True, env=ENVIRONMENT,
                            check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    for party in (0, 1):
        assert (run_dir / "parties" / f"party-{party}" / f"round-{kill_round:07d}.json").is_file()
        assert (run_dir / "parties" / f"party-{party}" / f"round-{kill_round - 1:07d}.json").is_file()
    assert not (run_dir / "checkpoints" / f"round-{kill_round:07d}.json").exists()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    # The coordinator goes back to its last complete checkpoint and the parties to the same round
    # (they keep two states): any mismatch would change every later loss.
    assert resumed_from(run_dir) == kill_round - 1
    assert_same_run(run_dir, reference)


def test_ctrl_c_finishes_the_round_checkpoints_and_resumes(tmp_path, reference):
    run_dir = tmp_path / "run"
    # Checkpoints only every 1000 rounds: the one found afterwards is the one Ctrl-C wrote.
    process = start(*TINY, "--rounds", "2000", "--workers", "2", "--set", "output.checkpoint_every=1000",
                    "--out", str(run_dir), "--quiet", start_new_session=True)
    wait_for_rounds(run_dir, 3, process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the workers get it too
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    stopped = stats_lines(run_dir)
    assert stopped < REFERENCE_ROUNDS - 2, "the run went too far before Ctrl-C arrived"
    for name in (f"checkpoints/round-{stopped:07d}.json", f"samples/round-{stopped:07d}.png", "losses.png",
                 f"parties/party-1/round-{stopped:07d}.json"):
        assert (run_dir / name).is_file(), name
    assert "Ctrl-C: finishing round" in (run_dir / "log.txt").read_text()
    if hasattr(training, "attach_report"):  # the end-of-run report, once distgan.report is wired in
        assert (run_dir / "report.html").is_file()
    # Resume in this process (no workers: faster, and a run may move between runtimes).
    config = Config.load(run_dir / "config.json")
    config.train.rounds, config.runtime.workers = REFERENCE_ROUNDS, 0
    train(config, run_dir, resume=True, quiet=True)
    assert resumed_from(run_dir) == stopped
    # Workers compute in other processes: equal to in-process up to float noise (tests/test_runs.py).
    np.testing.assert_allclose(losses(run_dir), losses(reference), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(generator_weights(run_dir), generator_weights(reference), rtol=1e-4, atol=1e-5)


# -- a party process killed ---------------------------------------------------------------------------
def kill_worker_mid_round(worker: int, at_round: int):
    """A round hook: in round ``at_round``, SIGKILL ``worker`` right after party 0 answered (round-robin
    asks the parties one after the other, so party 1's turn in that round is still to come)."""
    state = {"armed": False}

    def observer_of(pids: list[int]):
        def observe(party: int, request: p.Message, reply: p.Message) -> None:
            if state["armed"] and party == 0 and isinstance(request, p.TrainDiscriminator):
                state["armed"] = False
                os.kill(pids[worker], signal.SIGKILL)
        return observe

    def hook(coordinator, round_number, record) -> None:
        if round_number == at_round - 1:
            state["armed"] = True
            coordinator.parties.observers.append(observer_of(coordinator.parties.pids))
    return hook


def test_killed_party_process_is_left_out_and_the_round_completes(tmp_path):
    config = tiny_config("round-robin", rounds=5, split="iid", runtime__workers=2)
    train(config, tmp_path, quiet=True, round_hooks=[kill_worker_mid_round(1, at_round=3)])
    history = records(tmp_path)
    assert [r["round"] for r in history] == [1, 2, 3, 4, 5]
    assert all(set(r["parties"]) == {"0", "1"} for r in history[:2])
    assert all(set(r["parties"]) == {"0"} and r["failed_parties"] == [1] for r in history[2:])
    assert "party 1 failed" in (tmp_path / "log.txt").read_text()
    assert "was killed by SIGKILL" in (tmp_path / "log.txt").read_text()


def test_killed_party_process_is_restarted_from_its_checkpoint_with_wait(tmp_path):
    config = tiny_config("round-robin", rounds=5, split="iid", runtime__workers=2,
                         runtime__on_party_failure="wait", output__checkpoint_every=2)
    train(config, tmp_path, quiet=True, round_hooks=[kill_worker_mid_round(1, at_round=3)])
    log = (tmp_path / "log.txt").read_text()
    assert "was killed by SIGKILL: restarting it (1 of 3)" in log
    assert "worker 1 is back: parties [1] reloaded their state of rounds [2]" in log
    history = records(tmp_path)
    assert all(set(r["parties"]) == {"0", "1"} and r["failed_parties"] == [] for r in history)
    # Killed right after its checkpoint, party 1 lost nothing: the run equals one without a kill.
    uninterrupted = tmp_path / "uninterrupted"
    uninterrupted.mkdir()
    train(in_process(config), uninterrupted, quiet=True)
    np.testing.assert_allclose(losses(tmp_path), losses(uninterrupted), rtol=1e-4, atol=1e-5)


def in_process(config: Config) -> Config:
    copy = Config.from_dict(config.to_dict())
    copy.runtime.workers = 0
    return copy


def test_killed_party_process_stops_the_run_when_configured(capsys, tmp_path):
    run_dir = tmp_path / "run"

    def kill_a_worker() -> None:
        try:
            wait_for_rounds(run_dir, 2, limit_s=120)
        finally:  # kill even if the wait failed: the run must not go on for its 2000 rounds
            workers = [child for child in multiprocessing.active_children() if child.name.startswith("Spawn")]
            os.kill(workers[-1].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    code, output = run_cli(capsys, "train", *TINY, "--rounds", "2000", "--workers", "2",
                           "--set", "runtime.on_party_failure=stop", "--set", "output.checkpoint_every=1",
                           "--out", str(run_dir), "--quiet")
    killer.join(timeout=5)
    assert code != 0 and "the run stopped: party" in output and "was killed by SIGKILL" in output
    assert f"--resume {run_dir} continues from the last checkpoint" in output and "Traceback" not in output
    assert stats_lines(run_dir) < 2000

"""Flower deployment with real processes on loopback: TLS, SuperNode authentication, resident
parties, clean shutdown.

Slow (a minute or more: processes start, and SuperNodes poll every 3 s), so marked ``slow``
(``pytest -m slow`` selects them, ``-m "not slow"`` skips them); they run by default.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from distgan.cli import main
from distgan.runtime.flower.local import LocalFederation

pytestmark = pytest.mark.slow


def processes_with_home_under(folder: Path) -> list[str]:
    """Live (non-zombie) processes whose FLWR_HOME lies under ``folder``: everything the federation
    started, children included (they inherit the environment)."""
    marker = f"FLWR_HOME={folder}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "environ").read_bytes():
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command[:120]}")
        except OSError:
            continue
    return found


def stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_flower_local_with_tls_and_auth_trains_like_distgan_train(tmp_path):
    run_dir = tmp_path / "flower-run"
    # No --local-steps: --rounds means the same G steps as in distgan train, and avg-output keeps its
    # per-step algorithm on Flower (the same losses as in this process).
    options = ["--parties", "2", "--rounds", "2", "--strategy", "avg-output",
               "--data", "fake:n=240", "--split", "iid", "--batch-size", "8", "--set", "model.hidden=32",
               "--set", "model.latent_dim=16"]
    assert main(["flower", "local", *options, "--out", str(run_dir), "--quiet"]) == 0

    run_id = (run_dir / "run-id").read_text().strip()
    for name in ("config.json", "log.txt", "stats.jsonl", "losses.png", "parties.json",
                 "samples/round-0000002.png", "checkpoints/round-0000002.json",
                 f"run-{run_id}/parties/party-0/round-0000002.json", f"run-{run_id}/parties/party-1/round-0000002.json"):
        assert (run_dir / name).is_file(), name
    logs = run_dir / "flower" / "logs"
    assert "--enable-supernode-auth" in (logs / "superlink.log").read_text()
    for j in (0, 1):
        node_log = (logs / f"supernode-{j}.log").read_text()
        command = node_log.splitlines()[0]
        assert "--root-certificates" in command and "--auth-supernode-private-key" in command
        assert "--insecure" not in command
        # Resident parties: one party process per node for the whole run, no process per message.
        assert "--isolation process" in command
        assert node_log.count("resident party process") == 1, node_log[-2000:]
    assert processes_with_home_under(run_dir / "flower") == []

    # The same config in this process gives the same numbers: party state lived in the resident
    # party processes (and was pushed in the node's Context after every message).
    local_dir = tmp_path / "local-run"
    assert main(["train", *options, "--out", str(local_dir), "--quiet"]) == 0
    flower_config, local_config = (json.loads((d / "config.json").read_text()) for d in (run_dir, local_dir))
    assert flower_config["train"] == local_config["train"]
    for flower_round, local_round in zip(stats(run_dir), stats(local_dir), strict=True):
        assert math.isclose(flower_round["g_loss"], local_round["g_loss"], rel_tol=1e-4, abs_tol=1e-5)
        for party, values in local_round["parties"].items():
            assert math.isclose(flower_round["parties"][party]["d_loss"], values["d_loss"], rel_tol=1e-4, abs_tol=1e-5)
        assert flower_round["bytes_up"] == local_round["bytes_up"]
        assert flower_round["overhead_s"] > 0 and 0 < flower_round["overhead_share"] <= 1


def test_a_supernode_with_an_unregistered_key_is_refused(tmp_path):
    with LocalFederation(tmp_path / "federation", secure=True) as federation:
        federation.start_superlink()
        registered, stranger = federation.make_keys(2)
        federation.register([registered])
        member = federation.start_supernode("member", {"partition-id": 0}, registered)
        intruder = federation.start_supernode("intruder", {"partition-id": 1}, stranger)
        deadline = time.monotonic() + 60
        while intruder.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert intruder.process.returncode not in (None, 0), "the unregistered SuperNode was not refused"
        assert member.process.poll() is None, "the registered SuperNode did not stay connected"
    assert processes_with_home_under(tmp_path / "federation") == []
    assert os.environ.get("FLWR_HOME") is None or "federation" not in os.environ["FLWR_HOME"]

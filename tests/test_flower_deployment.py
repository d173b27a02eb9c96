"""Flower deployment with real processes on loopback: TLS, SuperNode authentication, resident
parties, clean shutdown.

Slow (a minute or more: processes start, and SuperNodes poll every 3 s), so marked ``slow``
(``pytest -m slow`` selects them, ``-m "not slow"`` skips them); they run by default.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from distgan.cli import main
from distgan.runtime.flower.local import LocalFederation, free_port

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


def test_flower_local_stopped_by_sigterm_mid_round_leaves_no_flower_process(tmp_path):
    """SIGTERM (what systemd or a CI timeout sends) while a round runs: every process of the
    federation ends (SuperLink, SuperNodes, SuperExecs, ServerApp, ClientApps)."""
    import subprocess
    import sys

    run_dir = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from distgan.cli import main; sys.exit(main())", "flower", "local", "--parties", "2", "--rounds", "500",
         "--strategy", "avg-output", "--data", "fake:n=240", "--split", "iid", "--batch-size", "8",
         "--set", "model.hidden=32", "--set", "model.latent_dim=16", "--set", "output.log_every=1", "--insecure",
         "--quiet", "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not ((run_dir / "stats.jsonl").is_file() and (run_dir / "stats.jsonl").read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-2000:]
        time.sleep(0.2)
    time.sleep(0.5)  # inside a later round
    assert processes_with_home_under(run_dir / "flower"), "no Flower process to stop"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=90)
    assert process.returncode != 0, output
    assert processes_with_home_under(run_dir / "flower") == [], output[-2000:]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_folder_organisations_an_intruder_and_a_supernode_that_comes_back(tmp_path):
    """Two organisations with image folders of labels 0-4 and 5-9 (40 px PNGs), TLS and node auth,
    each SuperNode started as the README says (distgan flower supernode); an unregistered key is
    refused; party 1's SuperNode is killed with SIGKILL mid-run (with its SuperExec and ClientApp)
    and restarted at once with the same command: it rejoins (on_party_failure=wait), its party
    resumes from its own state and trains again; labels keep their global meaning."""
    from distgan.config import Config
    from distgan.runtime.flower.apps import write_app
    from distgan.runtime.flower.local import flower_executable
    from distgan.runtime.flower.parties import FlowerSettings
    from tests.test_flower_ops import digit_folders

    folders = [digit_folders(tmp_path / "org-a", range(5)), digit_folders(tmp_path / "org-b", range(5, 10))]
    rounds, kill_after = 4, 2
    config = Config().with_overrides([
        "strategy.name=avg-output", "data.parties=2", f"train.rounds={rounds}", "train.batch_size=8",
        "model.hidden=32", "model.latent_dim=16", f"data.labels={','.join(map(str, range(10)))}",
        "runtime.on_party_failure=wait", "output.checkpoint_every=1", "output.sample_every=100",
        "output.log_every=1", "output.metrics=party-coverage"])
    run_dir = tmp_path / "run"
    work = tmp_path / "federation"
    with LocalFederation(work, secure=True) as federation:
        federation.start_superlink()
        keys = federation.make_keys(3)
        federation.register(keys[:2])
        assert federation.certificates is not None
        intruder = federation.start_supernode("intruder", {"partition-id": 1}, keys[2])

        def node_command(j: int) -> list[str]:
            return [flower_executable("distgan"), "flower", "supernode", "--superlink", f"127.0.0.1:{federation.port}",
                    "--ca", str(federation.certificates.ca_certificate), "--key", str(keys[j].private_key),
                    "--party", str(j), "--parties", "2", "--data", f"folder:{folders[j]}",
                    "--state-dir", str(tmp_path / f"state-{j}"), "--port", str(free_port())]

        nodes = [federation.start(f"supernode-{j}", node_command(j), federation.environment(f"supernode-{j}"))
                 for j in range(2)]
        app = tmp_path / "app"
        write_app(app, config, run_dir, settings=FlowerSettings(discovery_timeout_s=300.0))
        events: dict[str, float] = {}

        def watch() -> None:
            done = len((run_dir / "stats.jsonl").read_text().splitlines()) if (run_dir / "stats.jsonl").exists() else 0
            if done >= kill_after and "killed" not in events:
                supervisor = nodes[1].process.pid
                for child in children_of(supervisor):  # flower-supernode, its SuperExec and ClientApp
                    os.killpg(child, signal.SIGKILL)
                nodes[1].process.wait(timeout=30)
                events["killed"] = time.monotonic()
                nodes.append(federation.start("supernode-1-again", node_command(1),
                                              federation.environment("supernode-1")))
            if "killed" in events and "back" not in events and "party 1 is back" in (run_dir / "log.txt").read_text():
                events["back"] = time.monotonic()

        record = federation.run_app(app, watch)
        assert intruder.process.poll() not in (None, 0), "the unregistered SuperNode was not refused"
    assert processes_with_home_under(work) == []
    assert record.get("status") == "finished:completed", record
    print(f"restart to rejoin: {events['back'] - events['killed']:.1f} s")

    log_text = (run_dir / "log.txt").read_text()
    assert "party 1 is back" in log_text and "resumes from its own state of round" in log_text
    trained = [sorted(r["parties"]) for r in stats(run_dir)]
    assert len(trained) == rounds and trained[-1] == ["0", "1"]  # party 1 trains again after the restart
    assert "supernode-1" in str(nodes[-1].log_path)
    parties = json.loads((run_dir / "parties.json").read_text())
    assert [k for k, c in enumerate(parties["0"]["label_counts"]) if c] == [0, 1, 2, 3, 4]
    assert [k for k, c in enumerate(parties["1"]["label_counts"]) if c] == [5, 6, 7, 8, 9]
    final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]["metrics"]
    assert set(final["party-coverage/party-1/missing"]) <= {5, 6, 7, 8, 9}
    assert set(final["party-coverage/party-0/missing"]) <= {0, 1, 2, 3, 4}

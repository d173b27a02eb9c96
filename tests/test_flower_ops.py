"""Flower operations without Flower processes (seconds): one meaning of --rounds, the message
budget, stale-feedback warnings and the collapse detector."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distgan.cli import build_parser
from distgan.cli.common import CommandError
from distgan.experiments import generator_steps_per_round
from distgan.health import CollapseDetector, CollapseError, read_health, stale_feedback_warning
from distgan.report import RunData, health_section
from tests.conftest import tiny_config


def flower_config(*argv: str):
    from distgan.cli.flower import deployment_config

    args = build_parser().parse_args(["flower", "local", *argv])
    return deployment_config(args, args.party_data)


def train_config(*argv: str):
    from distgan.cli.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("strategy", ["avg-output", "round-robin", "fedgan"])
def test_rounds_mean_the_same_generator_steps_in_train_and_flower(strategy):
    options = ["--strategy", strategy, "--rounds", "1000", "--data", "fake:n=240", "--batch-size", "8"]
    flower, local = flower_config(*options), train_config(*options)
    assert (flower.train.rounds, flower.train.local_steps) == (local.train.rounds, local.train.local_steps) == (1000, 1)
    assert generator_steps_per_round(flower) * flower.train.rounds == generator_steps_per_round(local) * 1000


def test_a_message_over_the_budget_is_refused_with_the_steps_that_fit():
    with pytest.raises(CommandError, match=r"over Flower's 128 MiB budget: use --local-steps 334 or less"):
        flower_config("--strategy", "avg-output", "--local-steps", "400", "--batch-size", "128")
    # weights-exchanging strategies send the same bytes whatever the steps
    assert flower_config("--strategy", "fedgan", "--local-steps", "5000").train.local_steps == 5000


def test_stale_feedback_is_named_with_its_measured_consequence():
    assert stale_feedback_warning(tiny_config("avg-output")) is None
    config = tiny_config("avg-output", train__local_steps=334)
    warning = stale_feedback_warning(config)
    assert warning is not None and "local_steps=334" in warning and "cfid ~414" in warning
    assert stale_feedback_warning(tiny_config("fedgan", train__local_steps=334)) is None
    # weights-travelling round-robin (switch=epoch) takes coarse rounds naturally
    assert stale_feedback_warning(tiny_config("round-robin", train__local_steps=334, strategy__switch="epoch")) is None


def record(round_number: int, real: float, fake: float, g_loss: float) -> dict:
    return {"round": round_number, "g_loss": g_loss,
            "parties": {"0": {"d_real": real, "d_fake": fake}, "1": {"d_real": real, "d_fake": fake}}}


def test_the_collapse_detector_fires_on_saturated_discriminators_and_writes_health(tmp_path):
    config = tiny_config("avg-output", train__local_steps=334)  # the run: window of 3 rounds
    detector = CollapseDetector.for_run(config, tmp_path)
    assert detector.window == 3
    detector(None, 1, record(1, 0.7, 0.3, 0.9))
    for r in (2, 3):
        detector(None, r, record(r, 0.119, 0.1195, 2.13 + r * 1e-3))  # every input "fake" at the bound C=2
    assert not detector.collapsed
    detector(None, 4, record(4, 0.119, 0.119, 2.13))
    assert detector.collapsed and detector.collapsed_at == 4
    health = read_health(tmp_path)
    assert health is not None and health["collapsed"] and "logit bound since round 2" in health["reason"]
    with pytest.raises(CollapseError, match="collapsed at round 4"):
        detector.raise_if_collapsed()
    assert "TRAINING COLLAPSED at round 4" in health_section([RunData(tmp_path, {}, [], [], {})])


def test_the_collapse_detector_stays_quiet_on_a_learning_run(tmp_path):
    detector = CollapseDetector.for_run(tiny_config("avg-output", train__local_steps=100), tmp_path)
    for r in range(1, 30):
        detector(None, r, record(r, 0.55 + 0.01 * (r % 3), 0.45, 0.8 + 0.01 * (r % 5)))
    assert not detector.collapsed and read_health(tmp_path) is None


def test_the_collapse_detector_fires_when_g_loss_is_flat(tmp_path):
    detector = CollapseDetector.for_run(tiny_config("fedgan", train__local_steps=100), tmp_path)
    for r in range(1, 4):
        detector(None, r, record(r, 0.6, 0.4, 0.693147))
    assert detector.collapsed and "has not moved since round 1" in json.loads(
        (tmp_path / "health.json").read_text())["reason"]


# -- data that keeps its meaning -------------------------------------------------------------------------
def digit_folders(root, labels, per_label=4, size=40):
    """An organisation's image folder: one subfolder per label, PNGs of ``size`` px (not 28)."""
    from PIL import Image

    from distgan.data.sources import make_fake

    fake = make_fake(n=10 * per_label, channels=1, size=size, classes=10)
    for index in range(len(fake)):
        label = int(fake.labels[index])
        if label in labels:
            folder = root / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(fake.images[index, 0].numpy()).save(folder / f"{index}.png")
    return root


def node_party(config, data_dir, party_id, tmp_path):
    from distgan.runtime.flower.node import NodeSettings, build_node_party

    node = NodeSettings.from_node_config({"partition-id": party_id, "data-dir": str(data_dir)}, config, 1, tmp_path)
    return build_node_party(config, node)


def test_folder_parties_keep_the_global_meaning_of_their_labels(tmp_path):
    from distgan import protocol as p

    low, high = digit_folders(tmp_path / "org-a", range(5)), digit_folders(tmp_path / "org-b", range(5, 10))
    config = flower_config("--party-data", f"folder:{low}", "--party-data", f"folder:{high}", "--parties", "2")
    assert config.data.labels == tuple(str(k) for k in range(10))  # flower local declares the union
    for party_id, folder, present in ((0, low, range(5)), (1, high, range(5, 10))):
        description = node_party(config, folder, party_id, tmp_path).handle(p.Describe())
        counts = description.label_counts.tolist()
        assert len(counts) == 10 and [k for k, c in enumerate(counts) if c] == list(present)
        assert description.image_shape.tolist() == [1, 28, 28]  # sized for the MLP, not 64 px


def test_a_party_whose_folders_are_not_in_the_label_map_is_refused(tmp_path):
    from distgan.runtime.flower.node import NodeConfigError

    folder = digit_folders(tmp_path / "org", range(3))
    (folder / "2").rename(folder / "cat")
    config = tiny_config("avg-output", data__labels=("0", "1", "2"))
    with pytest.raises(ValueError, match=r"subfolders cat are not in the run's label map data.labels=0,1,2"):
        node_party(config, folder, 0, tmp_path)
    with pytest.raises(NodeConfigError, match="the run declares no label map"):
        node_party(tiny_config("avg-output"), folder, 0, tmp_path)


# -- runs kept apart --------------------------------------------------------------------------------------
def test_a_second_run_sharing_a_state_dir_leaves_the_first_runs_party_files_intact(tmp_path):
    from distgan import protocol as p
    from distgan.runtime.flower.node import NodeSettings, build_node_party, run_key_of

    shared = tmp_path / "state"
    config = tiny_config("avg-output")

    def saved_rounds(session: str, rounds: range) -> list[str]:
        node = NodeSettings.from_node_config({"partition-id": 1, "state-dir": str(shared)}, config,
                                             run_key_of(session), None)
        party = build_node_party(config, node)
        for r in rounds:
            party.handle(p.SaveState(r))
        return sorted(path.name for path in node.state_root.glob("parties/party-1/*.json"))

    first = saved_rounds("aaaa1111.launch1", range(1, 4))
    assert first == ["round-0000002.json", "round-0000003.json"]  # its own pruning keeps two
    assert saved_rounds("bbbb2222.launch1", range(1, 6)) == ["round-0000004.json", "round-0000005.json"]
    assert sorted(p.name for p in (shared / "run-aaaa1111" / "parties" / "party-1").glob("*.json")) == first
    # a resumed run (a new session of the same run) finds its own state again
    assert saved_rounds("aaaa1111.launch2", range(4, 5)) == ["round-0000003.json", "round-0000004.json"]
    assert (shared / "run-aaaa1111" / "run.json").read_text().strip() == '{"run": "aaaa1111"}'


# -- nodes that come back ----------------------------------------------------------------------------------
def test_the_supernode_supervisor_retries_a_refused_activation_and_leaves_no_child(tmp_path):
    """What a quick restart meets: the SuperLink refuses activation (exit 305) while it still counts
    the killed node online; the supervisor retries, and ends the node's process group each time."""
    import io
    import sys

    from distgan.runtime.flower.supervise import supervise

    attempts, orphan_pids = tmp_path / "attempts", tmp_path / "orphans"
    script = (f"import os, subprocess, sys; n = len(open({str(attempts)!r}).read()) if os.path.exists("
              f"{str(attempts)!r}) else 0; open({str(attempts)!r}, 'a').write('x'); "
              f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(orphan_pids)!r}, 'a').write(f'{{child.pid}}\\n'); print('Exit Code: 305' if n < 2 else 'bye', flush=True); sys.exit(1 if n < 2 else 0)")
    echo = io.StringIO()
    relayed = io.BytesIO()
    assert supervise([sys.executable, "-c", script], dict(os.environ), echo=echo, sleep=lambda s: None,
                     output=relayed) == 0
    assert relayed.getvalue().count(b"Exit Code: 305") == 2  # the node's output passes through
    assert attempts.read_text() == "xxx"
    assert echo.getvalue().count("activation refused (exit 305)") == 2
    for pid in map(int, orphan_pids.read_text().split()):  # each attempt's child went with its group
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_exit_codes_say_what_happened():
    from distgan.runtime.flower.supervise import exit_meaning

    assert "not registered" in exit_meaning(305) and "still counts this node online" in exit_meaning(305)
    assert "killed" in exit_meaning(-9)


# -- operations -------------------------------------------------------------------------------------------
def test_the_kept_ca_signs_a_certificate_for_a_new_host(tmp_path):
    from cryptography import x509

    from distgan.cli import main

    keys = tmp_path / "fed-keys"
    assert main(["flower", "keys", "--out", str(keys), "--host", "superlink.example.org"]) == 0
    assert (keys / "ca.key").stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((keys / "ca.crt").read_bytes())
    assert main(["flower", "server-cert", "--keys", str(keys), "--host", "superlink.example.org",
                 "--host", "203.0.113.5"]) == 0
    server = x509.load_pem_x509_certificate((keys / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # SuperNodes keep trusting the ca.crt they have
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.5"]
    assert names.get_values_for_type(x509.DNSName) == ["superlink.example.org"]


def test_the_superlink_needs_a_named_address(capsys):
    from distgan.cli import main

    with pytest.raises(SystemExit):
        main(["flower", "superlink", "--keys", "fed-keys"])
    assert "--host" in capsys.readouterr().err

"""Bad input and bad party replies: a clear error naming the problem, a non-zero exit, nothing half-written.

Extends tests/test_cli.py, test_config.py and test_data.py (which check the messages of most bad
inputs with ``--dry-run`` or at the library level): here every case runs the real command, not a
dry run, and the run folder it was given must not exist afterwards. Party faults use real Party
objects behind a faulty wrapper in a real run; no code path of distgan is mocked.
docs/RELIABILITY.md maps every case to its test.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distgan import protocol as p
from distgan.assembly import build_party, plan_data
from distgan.cli import main
from distgan.config import Config
from distgan.parties import PartyFailedError
from distgan.runtime.local import InProcessParties
from distgan.strategies import STRATEGIES
from distgan.training import train
from tests.conftest import tiny_config

# A tiny run on fake data, as command-line flags (tests/conftest.py's tiny_config, for the CLI).
TINY = ["--data", "fake:n=240", "--split", "iid", "--batch-size", "8", "--set", "model.hidden=32",
        "--set", "model.latent_dim=16", "--set", "output.sample_every=1000", "--set", "output.log_every=1"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[list[float]]:
    return [[r["g_loss"]] + [s["d_loss"] for s in r["parties"].values()] for r in records(run_dir)]


def generator_weights(run_dir: Path) -> torch.Tensor:
    from distgan.sampling import load_generator

    generator, _, _ = load_generator(run_dir)
    return torch.cat([q.detach().flatten() for q in generator.parameters()])


# -- bad input on the command line: the real command, and nothing left behind ----------------------
@pytest.fixture(scope="module")
def folder_of_40px_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("px40")
    for k in range(4):
        pixels = np.random.default_rng(k).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png")
    return folder


@pytest.fixture(scope="module")
def folder_with_a_corrupt_image(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corrupt")
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    return folder


BAD_RUNS = [
    # data that only the loaded data can refute: checked after the run folder is made, so it must be removed
    pytest.param(["--data", "fake:n=5", "--split", "iid", "--parties", "10"], "10 parties but only 5 samples",
                 id="more-parties-than-samples-iid"),
    pytest.param(["--data", "fake:n=8", "--split", "dirichlet:0.3", "--parties", "10"],
                 "10 parties but only 8 samples", id="more-parties-than-samples-dirichlet"),
    pytest.param(["--data", "fake:n=40,classes=5", "--split", "labels:0-2/3-7"], "label 5 is not in",
                 id="label-not-in-data"),
    pytest.param(["--data", "fake:n=20", "--split", "one-label", "--parties", "12"], "only 10 labels",
                 id="one-label-too-many-parties"),
    pytest.param(["--data", "folder:{px40}", "--model", "dcgan", "--split", "iid", "--set", "data.image_size=40"],
                 "dcgan supports square images of [28, 32, 64] px, got 40x40", id="image-size-unsupported-by-model"),
    pytest.param(["--data", "folder:{corrupt}", "--split", "iid"], "broken.png", id="corrupt-image-named"),
    pytest.param(["--dp-epsilon", "1e-9", "--data", "fake:n=40", "--split", "iid"],
                 "privacy.epsilon=1e-09: no noise multiplier reaches it", id="dp-epsilon-unreachable"),
    # config values: refused before anything is written
    pytest.param(["--set", "train.lr_d=nan"], "train.lr_d=nan: must be a positive finite number",
                 id="learning-rate-not-finite"),
    pytest.param(["--set", "train.lr_g=1e-3x"], "train.lr_g='1e-3x': expected a float", id="learning-rate-not-numeric"),
    pytest.param(["--set", "strategy.download_fraction=1.5"], "strategy.download_fraction=1.5: must lie in (0, 1]",
                 id="theta-d-above-1"),
    pytest.param(["--set", "strategy.upload_fraction=0"], "strategy.upload_fraction=0.0: must lie in (0, 1]",
                 id="theta-u-zero"),
    pytest.param(["--noise-multiplier", "-1"], "privacy.noise_multiplier=-1.0: must be a positive finite number",
                 id="dp-noise-negative"),
    pytest.param(["--max-grad-norm", "0"], "privacy.max_grad_norm=0.0: must be a positive finite number",
                 id="dp-clip-zero"),
    pytest.param(["--dp-delta", "1.5"], "privacy.delta=1.5: must lie in (0, 1)", id="dp-delta-above-1"),
    pytest.param(["--dp-epsilon", "0"], "privacy.epsilon=0.0: must be a positive finite number", id="dp-epsilon-zero"),
    pytest.param(["--set", "runtime.on_party_failure=later"],
                 "runtime.on_party_failure='later': must be one of continue, stop, wait", id="failure-policy-unknown"),
]


@pytest.mark.parametrize("argv, message", BAD_RUNS)
def test_bad_input_fails_cleanly_and_writes_nothing(capsys, tmp_path, argv, message, folder_of_40px_images,
                                                    folder_with_a_corrupt_image):
    run_dir = tmp_path / "run"
    argv = [a.format(px40=folder_of_40px_images, corrupt=folder_with_a_corrupt_image) for a in argv]
    code, output = run_cli(capsys, "train", *TINY, "--rounds", "2", *argv, "--out", str(run_dir), "--quiet")
    assert code != 0
    assert message in output
    assert "Traceback" not in output
    assert not run_dir.exists(), sorted(run_dir.rglob("*"))


def test_images_of_another_size_are_resized_for_the_model(capsys, folder_of_40px_images):
    """The counterpart of the unsupported-size case: without data.image_size, 40 px images become 64 px."""
    code, output = run_cli(capsys, "train", "--dry-run", "--data", f"folder:{folder_of_40px_images}",
                           "--model", "dcgan", "--split", "iid")
    assert code == 0 and "images (3, 64, 64)" in output


def test_unknown_metric_is_named(capsys, finished_run):
    try:
        code = main(["evaluate", str(finished_run), "--metrics", "nosuch"])
    except SystemExit as exit_info:  # refused while parsing the arguments
        code = exit_info.code
    output = capsys.readouterr().err
    assert code != 0 and "unknown metric 'nosuch'; valid: " in output and "cfid" in output


# -- the run folder: under a file, read-only, full ----------------------------------------------------
def test_run_folder_under_a_file_is_refused(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, output = run_cli(capsys, "train", *TINY, "--rounds", "2", "--out", str(blocker / "run"), "--quiet")
    assert code != 0 and f"{blocker / 'run'}: cannot write the run folder (Not a directory)" in output
    assert blocker.read_text() == "not a folder"


def mount_tmpfs(where: Path, options: str) -> None:
    """A small tmpfs (tests run as root, where chmod does not stop writes); skip where mounting is refused."""
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode})")


@pytest.fixture
def mounts(tmp_path):
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        where = tmp_path / name
        mount_tmpfs(where, options)
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def test_read_only_run_folder_is_refused(capsys, mounts):
    read_only = mounts("ro", "ro,size=1m")
    code, output = run_cli(capsys, "train", *TINY, "--rounds", "2", "--out", str(read_only / "run"), "--quiet")
    assert code != 0 and "cannot write the run folder (Read-only file system)" in output
    assert list(read_only.iterdir()) == []


def test_full_disk_mid_run_names_the_file_and_keeps_the_last_checkpoint(capsys, tmp_path, mounts, finished_run):
    # Room for two checkpoints (coordinator and parties) and the small files, not for a third.
    one_checkpoint = sum(path.stat().st_size for path in finished_run.rglob("round-0000006.safetensors"))
    disk = mounts("full", f"size={2 * one_checkpoint + 300_000}")
    run_dir = disk / "run"
    code, output = run_cli(capsys, "train", *TINY, "--rounds", "50", "--set", "output.checkpoint_every=1",
                           "--out", str(run_dir), "--quiet")
    assert code != 0 and "No space left on device" in output and ".safetensors" in output
    assert f"--resume {run_dir}" in output and "Traceback" not in output
    assert not list(run_dir.rglob("*.tmp")), "a half-written file was left behind"
    # What is on disk is whole: every checkpoint's checksum holds, and the run resumes where there is room.
    from distgan.checkpoint import load_checkpoint
    from distgan.coordinator import checkpoint_stems

    stems = checkpoint_stems(run_dir / "checkpoints")
    assert stems, output
    for stem in [*stems, *(path.with_suffix("") for path in (run_dir / "parties").rglob("round-*.json"))]:
        load_checkpoint(stem)
    moved = copy_run(run_dir, tmp_path / "moved")
    last = int(stems[-1].name.split("-")[1])
    code, output = run_cli(capsys, "train", "--resume", str(moved), "--rounds", str(last + 1), "--quiet")
    assert code == 0, output
    assert f"resumed from the checkpoint of round {last}" in (moved / "log.txt").read_text()
    assert [r["round"] for r in records(moved)] == list(range(1, last + 2))


# -- checkpoints: truncated or corrupted files are detected, the previous good one is used -----------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """6 rounds, checkpoints at rounds 3 and 6: the uninterrupted reference."""
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    assert main(["train", *TINY, "--rounds", "6", "--set", "output.checkpoint_every=3", "--out", str(run_dir),
                 "--quiet"]) == 0
    return run_dir


def copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    payload = bytearray(path.read_bytes())
    payload[len(payload) // 2] ^= 0xFF
    path.write_bytes(bytes(payload))


@pytest.mark.parametrize("damage", [truncate, flip_a_byte], ids=["truncated", "corrupted"])
def test_damaged_checkpoint_falls_back_to_the_previous_good_one(capsys, tmp_path, finished_run, damage):
    run_dir = copy_run(finished_run, tmp_path / "run")
    damage(run_dir / "checkpoints" / "round-0000006.safetensors")
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code == 0, output
    log = (run_dir / "log.txt").read_text()
    assert "round-0000006.safetensors: checksum mismatch (truncated or corrupted)" in log
    assert "resumed from the checkpoint of round 3" in log
    # Rounds 4-6 redone from round 3 give exactly the uninterrupted result; round 6 is whole again.
    assert losses(run_dir) == losses(finished_run)
    assert torch.equal(generator_weights(run_dir), generator_weights(finished_run))


def test_corrupted_checkpoint_record_is_named(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / "checkpoints" / "round-0000006.json").write_text('{"sha256": ')
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code == 0, output
    assert "round-0000006.json: corrupted checkpoint record" in (run_dir / "log.txt").read_text()
    assert losses(run_dir) == losses(finished_run)


def test_no_usable_checkpoint_is_an_error_naming_each_file(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    for round_number in (3, 6):
        truncate(run_dir / "checkpoints" / f"round-{round_number:07d}.safetensors")
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--quiet")
    assert code != 0 and "no usable checkpoint to resume from" in output
    assert "round-0000003.safetensors: checksum mismatch" in output
    assert "round-0000006.safetensors: checksum mismatch" in output


def test_corrupted_party_state_is_named_and_that_party_left_out(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    flip_a_byte(run_dir / "parties" / "party-1" / "round-0000006.safetensors")
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--rounds", "8", "--quiet")
    assert code == 0, output
    assert "party 1 failed" in (run_dir / "log.txt").read_text()
    assert "party-1/round-0000006.safetensors: checksum mismatch" in (run_dir / "log.txt").read_text()
    assert [r["failed_parties"] for r in records(run_dir)[6:]] == [[1], [1]]


def test_resume_of_a_run_with_a_broken_config_is_named(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / "config.json").write_text("{ not json")
    code, output = run_cli(capsys, "train", "--resume", str(run_dir))
    assert code != 0 and f"{run_dir / 'config.json'}: not valid JSON" in output


def test_resume_with_a_different_config_changes_nothing(capsys, tmp_path, finished_run):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--set", "train.lr_g=0.1")
    assert code != 0 and "different config" in output and "train.lr_g: 0.002 != 0.1" in output
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


# -- a party that replies badly is rejected and left out; the run goes on ----------------------------
class FaultyParty:
    """A real Party whose replies to training requests are damaged from round ``from_round`` on."""

    def __init__(self, party, damage: Callable[[p.Message, p.Message], p.Message], from_round: int = 2) -> None:
        self.party = party
        self.damage = damage
        self.from_round = from_round
        self.training_requests = 0

    def handle(self, request: p.Message) -> p.Message:
        reply = self.party.handle(request)
        if isinstance(request, (p.TrainDiscriminator, p.TrainAndUpload, p.TrainLocalGAN)):
            self.training_requests += 1
            if self.training_requests >= self.from_round:
                return self.damage(request, reply)
        return reply


def replace(reply: p.Message, **fields: object) -> p.Message:
    return dataclasses.replace(reply, **fields)  # type: ignore[type-var]


def with_nan(request, reply):
    gradients = reply.input_gradients.clone()
    gradients[0, 0, 0, 0, 0] = float("nan")
    return replace(reply, input_gradients=gradients)


def with_inf(request, reply):
    logits = reply.logits.clone()
    logits[0, -1] = float("inf")
    return replace(reply, logits=logits)


def half_the_batch(request, reply):
    half = reply.logits.shape[1] // 2
    return replace(reply, logits=reply.logits[:, :half], input_gradients=reply.input_gradients[:, :half])


def as_float64(request, reply):
    return replace(reply, input_gradients=reply.input_gradients.double())


def oversized(request, reply):
    steps = reply.logits.shape[0]
    return replace(reply, logits=torch.zeros(steps, 1600), input_gradients=torch.zeros(steps, 1600, 1, 28, 28))


def acknowledgement(request, reply):
    return p.Ack()


def crash(request, reply):
    raise RuntimeError("disk of party 1 went away")


def delta_outside_d(request, reply):
    indices = reply.indices.clone()
    indices[-1] = 10**9
    return replace(reply, indices=indices)


def generator_of_another_shape(request, reply):
    generator = dict(reply.generator)
    name = next(iter(generator))
    generator[name] = torch.zeros(3, 3)
    return replace(reply, generator=generator)


BAD_REPLIES = [
    pytest.param("round-robin", with_nan, "holds NaN or Inf", id="nan"),
    pytest.param("avg-output", with_inf, "holds NaN or Inf", id="inf"),
    pytest.param("avg-output", half_the_batch, "input_gradients has shape (1, 4, 1, 28, 28), but (1, 8, 1, 28, 28) "
                 "images were sent", id="wrong-shape"),
    pytest.param("round-robin", as_float64, "input_gradients has dtype torch.float64, expected float32",
                 id="wrong-dtype"),
    pytest.param("round-robin", oversized, "exceeds the limit", id="oversized"),
    pytest.param("md-gan", acknowledgement, "replied reply.ack to train.discriminator", id="wrong-reply-type"),
    pytest.param("round-robin", crash, "RuntimeError: disk of party 1 went away", id="party-raises"),
    pytest.param("server-d", delta_outside_d, "indices outside [0,", id="delta-index-outside-d"),
    pytest.param("fedgan", generator_of_another_shape, "the model's is torch.float32", id="weights-wrong-shape"),
]


def faulty_parties(config: Config, run_dir: Path, damage, stop: bool = False) -> InProcessParties:
    plan = plan_data(config)
    parties = [build_party(config, plan, j, run_dir) for j in range(config.data.parties)]
    parties[1] = FaultyParty(parties[1], damage)  # type: ignore[call-overload]
    return InProcessParties(parties, p.Expectations((1, 1, 1), 1, 1), stop)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy, damage, message", BAD_REPLIES)
def test_bad_reply_is_rejected_and_the_run_goes_on(tmp_path, strategy, damage, message):
    config = tiny_config(strategy, rounds=4, split="iid")
    train(config, tmp_path, quiet=True, parties=faulty_parties(config, tmp_path, damage))
    log = (tmp_path / "log.txt").read_text()
    assert "party 1 failed and is left out from now on" in log and message in log, log
    history = records(tmp_path)
    assert [r["round"] for r in history] == [1, 2, 3, 4]
    assert set(history[0]["parties"]) == {"0", "1"} and history[0]["failed_parties"] == []
    assert all(set(r["parties"]) == {"0"} and r["failed_parties"] == [1] for r in history[2:])
    assert all(np.isfinite(r["g_loss"]) for r in history)
    assert bool(torch.isfinite(generator_weights(tmp_path)).all())


def test_bad_reply_stops_the_run_when_configured(tmp_path):
    config = tiny_config("avg-output", rounds=4, split="iid", runtime__on_party_failure="stop")
    with pytest.raises(PartyFailedError, match="party 1 failed: malformed reply rejected: .* holds NaN or Inf"):
        train(config, tmp_path, quiet=True, parties=faulty_parties(config, tmp_path, with_nan, stop=True))
    assert [r["round"] for r in records(tmp_path)] == [1]


# -- parties sampled per round: every strategy --------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_parties_per_round_works_with_every_strategy(tmp_path, strategy):
    config = tiny_config(strategy, rounds=3, parties=4, split="iid", train__parties_per_round=2)
    train(config, tmp_path, quiet=True)
    history = records(tmp_path)
    assert len(history) == 3
    if STRATEGIES.get(strategy).releases_once(config):  # every party releases once, in round 1; nothing after
        assert [sorted(r["parties"]) for r in history] == [["0", "1", "2", "3"], [], []]
        return
    expected = 1 if STRATEGIES.get(strategy).pooled_data else 2
    assert all(len(r["parties"]) == expected for r in history), [sorted(r["parties"]) for r in history]
    if expected == 2:  # the sample changes from round to round
        assert len({tuple(sorted(r["parties"])) for r in history}) > 1

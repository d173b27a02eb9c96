"""Metrics during a real (tiny) MNIST run, `distgan evaluate` agreeing with them, and the HTML report
rendering in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from distgan import training
from distgan.cli import main
from distgan.config import Config, ModelConfig, OutputConfig, TrainConfig
from distgan.metrics import evaluate_run, read_metrics

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--virtual-time-budget=5000"]


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    return binary


def render_in_chromium(page: Path) -> tuple[str, str]:
    """The DOM after load, and Chromium's log (console messages included)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr",
                               "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def assert_renders(page: Path, min_images: int) -> str:
    dom, log = render_in_chromium(page)
    match = re.search(r'data-images-ok="(\d+)/(\d+)"', dom)
    assert match, "the page's load script did not run"
    decoded, total = int(match.group(1)), int(match.group(2))
    assert decoded == total >= min_images
    assert "Uncaught" not in log and ":CONSOLE" not in log, log[-2000:]
    return dom


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> Path:
    """20 rounds of the default setting (2 parties, digits 0-4 | 5-9), small model; metrics at 10 and 20."""
    # The raw G (no weight average): after 20 rounds it already makes some confidently classified
    # samples, which the label breakdown and coverage/kl need; the average would still lag behind.
    config = Config(model=ModelConfig(hidden=64),
                    train=TrainConfig(rounds=20, batch_size=32, g_average=None),
                    output=OutputConfig(sample_every=5, checkpoint_every=10, eval_every=10, log_every=10))
    run_dir = tmp_path_factory.mktemp("runs") / "mnist"
    training.check_new_run_dir(run_dir, overwrite=False)
    training.train(config, run_dir, quiet=True)
    return run_dir


def test_training_writes_cheap_metrics_then_the_full_set(mnist_run):
    lines = read_metrics(mnist_run)
    assert [line["round"] for line in lines] == [10, 20]
    cheap, full = lines[0]["metrics"], lines[1]["metrics"]
    for key in ("cfid", "cfid/generated", "coverage/classes", "coverage/histogram", "cis",
                "party-coverage/party-0", "party-coverage/party-1/missing"):
        assert key in cheap and key in full
    for line in (cheap, full):  # KL needs confident samples; after 10 rounds of a tiny G there may be none yet
        assert ("coverage/kl" in line) == (sum(line["coverage/histogram"]) > 0)
    assert "coverage/kl" in full
    assert "tstr/accuracy" not in cheap and "tstr/accuracy" in full
    assert full["cfid/generated"] == 2000 and full["cfid/reference"] == 1000
    assert lines[0]["elapsed_s"] > 0
    stats = [json.loads(line) for line in (mnist_run / "stats.jsonl").read_text().splitlines()]
    assert stats[9]["metrics"]["cfid"] == pytest.approx(cheap["cfid"])  # shown in the progress line


def test_evaluate_recomputes_the_numbers_of_training(mnist_run, capsys):
    round_number, values = evaluate_run(mnist_run, names=["cfid", "coverage"])
    final = read_metrics(mnist_run)[-1]["metrics"]
    assert round_number == 20
    assert values["cfid"] == pytest.approx(final["cfid"], rel=1e-9)
    assert values["coverage/histogram"] == final["coverage/histogram"]
    assert main(["evaluate", str(mnist_run), "--round", "10", "--metrics", "cfid", "--n", "300", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["round"] == 10 and printed["metrics"]["cfid/generated"] == 300
    assert main(["evaluate", str(mnist_run), "--round", "7"]) == 2
    assert "no checkpoint of round 7" in capsys.readouterr().err


def test_run_report_renders_in_headless_chromium(mnist_run):
    page = mnist_run / "report.html"
    assert page.is_file()
    text = page.read_text()
    assert "src=\"http" not in text and "<link" not in text  # self-contained: nothing to fetch
    # 5 sample grids, label breakdown, metric curves, losses, bytes.
    dom = assert_renders(page, min_images=9)
    for heading in ("Metrics (final)", "Did each party", "Leakage audit", "Samples over time", "Metrics over rounds",
                    "Losses", "Bytes per round", "Config"):
        assert heading in dom


def test_report_compares_runs_side_by_side(mnist_run, make_config, tmp_path, capsys):
    fake_run = tmp_path / "fake"
    training.check_new_run_dir(fake_run, overwrite=False)
    training.train(make_config(rounds=6), fake_run, quiet=True)  # fake data: no default metrics, said in the log
    assert "no default metrics" in (fake_run / "log.txt").read_text()
    out = tmp_path / "compare.html"
    assert main(["report", str(mnist_run), str(fake_run), "--out", str(out)]) == 0
    dom = assert_renders(out, min_images=8)
    assert "differences highlighted" in dom and "fake" in dom and "mnist" in dom
    assert main(["report", str(mnist_run), str(fake_run)]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2

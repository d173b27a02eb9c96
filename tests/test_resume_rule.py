"""One rule for continuing a run (cli.train.resolve_run / resumed_config), on every command that can:
``distgan train --resume`` and ``distgan flower local|simulate --resume`` / ``flower app --resume``
continue a run with its own config; --rounds may extend it; any other option that differs is refused,
naming the difference (``distgan flower`` used to ignore such options silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

import distgan
from distgan.cli import main

pytest.importorskip("flwr")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return distgan.train("smoke", out=tmp_path_factory.mktemp("resume") / "run", rounds=2).path


@pytest.mark.parametrize("command", [["train", "--resume", "{run}"],
                                     ["flower", "app", "--out", "{app}", "--run-dir", "{run}", "--resume"]])
def test_a_resume_with_a_different_option_is_refused(command: list[str], finished_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = [part.format(run=finished_run, app=tmp_path / "app") for part in command]
    assert main([*argv, "--parties", "3", "--dry-run"] if argv[0] == "train" else [*argv, "--parties", "3"]) == 2
    assert "data.parties: 2 != 3" in capsys.readouterr().err
    assert not (tmp_path / "app").exists()


def test_flower_app_resume_may_extend_the_rounds(finished_run: Path, tmp_path: Path) -> None:
    assert main(["flower", "app", "--out", str(tmp_path / "app"), "--run-dir", str(finished_run), "--resume",
                 "--rounds", "5", "--parties", "2"]) == 0  # the same value as the run's is not a difference
    text = (tmp_path / "app" / "pyproject.toml").read_text()
    assert '\\"rounds\\": 5' in text and 'resume = true' in text

"""Every bad input named above gives a non-zero exit and a message naming the problem."""

from __future__ import annotations

import pytest

from distgan.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "nosuch"], "unknown strategy 'nosuch'; valid: "),
    (["--model", "nosuch"], "unknown model 'nosuch'; valid: "),
    (["--data", "nosuch"], "unknown data source 'nosuch'; valid: "),
    (["--preset", "nosuch"], "unknown preset 'nosuch'; valid: "),
    (["--split", "labels:0-4/5-9", "--parties", "3"], "2 groups but --parties is 3"),
    (["--split", "labels:0-4/5-12"], "label 10 is not in"),
    (["--split", "bogus:1"], "unknown split 'bogus'"),
    (["--data", "folder:/no/such/dir"], "no such folder"),
    (["--set", "train.lr_g=abc"], "train.lr_g='abc': expected a float"),
    (["--set", "strategy.upload_fraction=2"], "strategy.upload_fraction=2.0: must lie in (0, 1]"),
    (["--model", "dcgan", "--set", "data.image_size=48"], "dcgan supports square images"),
    (["--parties-per-round", "5"], "must not exceed data.parties=2"),
])
def test_bad_train_inputs(capsys, argv, message):
    code, output = run_cli(capsys, "train", "--dry-run", *argv)
    assert code != 0
    assert message in output


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--batch-size", "-3"], ["--local-steps", "x"]])
def test_non_positive_numbers_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dry-run", *argv])
    assert exit_info.value.code != 0
    assert argv[0] in capsys.readouterr().err


def test_dry_run_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = run_cli(capsys, "train", "--dry-run")
    assert code == 0 and "party 1: 2000 samples, labels [5, 6, 7, 8, 9]" in output
    assert "test split (no party holds it): 1000 samples" in output
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_folder_is_refused(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    code, output = run_cli(capsys, "train", "--preset", "smoke", "--out", str(tmp_path))
    assert code != 0 and "not empty" in output and "--overwrite" in output
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_resume_of_a_non_run_is_refused(capsys, tmp_path):
    code, output = run_cli(capsys, "train", "--resume", str(tmp_path))
    assert code != 0 and "not a distgan run" in output


def test_resume_with_a_different_config_is_refused(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--rounds", "2", "--out", str(run_dir), "--quiet"]) == 0
    code, output = run_cli(capsys, "train", "--resume", str(run_dir), "--strategy", "avg-output")
    assert code != 0 and "different config" in output and "strategy.name" in output


def test_every_command_has_help(capsys):
    from distgan.cli.common import COMMANDS

    for name in COMMANDS.names():
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: distgan" in capsys.readouterr().out


def test_presets_lists_one_line_each(capsys):
    from distgan.presets import PRESETS

    code, output = run_cli(capsys, "presets")
    assert code == 0 and len(output.strip().splitlines()) == len(PRESETS.names())


def test_every_preset_validates():
    from distgan.presets import PRESETS

    for name in PRESETS.names():
        PRESETS.get(name)()

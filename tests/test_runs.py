"""End-to-end runs on fake data: resume equals an uninterrupted run; workers equal in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distgan.cli import main
from distgan.training import train
from tests.conftest import tiny_config


def stats(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def losses(records):
    return [[r["g_loss"]] + [p["d_loss"] for p in r["parties"].values()] for r in records]


def generator_weights(run_dir):
    from distgan.sampling import load_generator

    generator, _, _ = load_generator(run_dir)
    return torch.cat([p.detach().flatten() for p in generator.parameters()])


def test_run_folder_layout(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train(tiny_config(rounds=6), run_dir, quiet=True)
    for name in ("config.json", "log.txt", "stats.jsonl", "losses.png", "parties.json",
                 "samples/round-0000000.png", "samples/round-0000006.png",
                 "checkpoints/round-0000006.safetensors", "checkpoints/round-0000006.json"):
        assert (run_dir / name).is_file(), name
    records = stats(run_dir)
    assert [r["round"] for r in records] == list(range(1, 7))
    party = records[0]["parties"]["0"]
    assert {"d_loss", "d_real", "d_fake", "bytes_down", "bytes_up"} <= set(party)
    assert party["bytes_down"] > 0 and party["bytes_up"] > 0


@pytest.mark.parametrize("strategy", ["round-robin", "avg-output"])
def test_resume_equals_uninterrupted_run(tmp_path, strategy):
    whole, split = tmp_path / "whole", tmp_path / "split"
    for folder in (whole, split):
        folder.mkdir()
    train(tiny_config(strategy, rounds=6), whole, quiet=True)
    train(tiny_config(strategy, rounds=3), split, quiet=True)
    assert main(["train", "--resume", str(split), "--rounds", "6", "--quiet"]) == 0
    assert losses(stats(whole)) == losses(stats(split))
    assert torch.equal(generator_weights(whole), generator_weights(split))


def test_workers_equal_in_process(tmp_path):
    results = {}
    for workers in (0, 2):
        run_dir = tmp_path / f"w{workers}"
        run_dir.mkdir()
        # One thread per worker (each party on a core of its own): the numbers do not depend on it.
        train(tiny_config("avg-output", rounds=4, runtime__workers=workers, runtime__worker_threads=1), run_dir,
              quiet=True)
        results[workers] = (losses(stats(run_dir)), generator_weights(run_dir))
    log = (tmp_path / "w2" / "log.txt").read_text()
    assert "worker 0: parties [0], 1 torch thread(s)" in log and "worker 1: parties [1], 1 torch thread(s)" in log
    np.testing.assert_allclose(results[0][0], results[2][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[2][1], rtol=1e-4, atol=1e-5)


def test_sample_command_writes_uint8_images(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--rounds", "3", "--out", str(run_dir), "--quiet"]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", str(run_dir), "--n", "10", "--out", str(out), "--seed", "1"]) == 0
    images = np.load(out)["images"]
    assert images.dtype == np.uint8 and images.shape == (10, 1, 28, 28)

"""The test split: no party ever receives a test sample, whatever the split, the limit or the source."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from distgan.assembly import plan_data
from distgan.cli import main
from distgan.config import Config, DataConfig, RuntimeConfig
from distgan.data.splits import split_source, stratified_draw
from distgan.metrics.base import PartyLabels
from distgan.metrics.reference import digit_split
from distgan.run_folder import TEST_SPLIT as TEST_SPLIT_KEY
from distgan.training import train

SPLITS = [  # (split, parties, limit): every split kind, and data.limit
    ("iid", 3, None),
    ("labels:0-4/5-9", 2, None),
    ("labels:0,1/2,3/4,5/6,7/8,9", 5, None),  # pairs of labels
    ("one-label", 10, None),
    ("dirichlet:0.3", 4, None),
    ("iid", 2, 1000),
]


def rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in images.flatten(1).numpy()}


@pytest.mark.parametrize(("split", "parties", "limit"), SPLITS)
def test_no_party_holds_a_test_digit(split: str, parties: int, limit: int | None) -> None:
    config = Config(data=DataConfig(source="mnist", split=split, parties=parties, limit=limit))
    plan = plan_data(config)
    assert plan.test is not None and plan.test_index is not None and plan.source_index is not None
    assert len(plan.test) == 1000 and plan.test.labels.bincount().tolist() == [100] * 10
    test_rows = rows(plan.test.images)
    held: list[torch.Tensor] = []
    for party, share in enumerate(plan.shares.indices):
        in_source = plan.source_index[share]
        assert not torch.isin(in_source, plan.test_index).any(), f"party {party} holds a test index ({split})"
        assert not rows(plan.data.images[share]) & test_rows, f"party {party} holds a test image ({split})"
        held.append(in_source)
    everything = torch.cat(held)
    assert len(everything.unique()) == len(everything)  # and no sample is in two shares
    if limit is None and split != "one-label" and not split.startswith("labels"):
        assert len(everything) == 4000  # every train digit is used


def test_the_test_split_is_fixed_whatever_the_run_seed() -> None:
    seeds = [plan_data(Config(runtime=RuntimeConfig(seed=seed))) for seed in (0, 7)]
    assert torch.equal(seeds[0].test_index, seeds[1].test_index)  # type: ignore[arg-type]
    assert not torch.equal(seeds[0].source_index, seeds[1].source_index)  # type: ignore[arg-type]
    # ... and it is the digits the metrics compare with, which the evaluator never trained on.
    reference = digit_split()
    assert rows(reference.held_out.images) == rows(seeds[0].test.images)  # type: ignore[union-attr]
    assert not rows(reference.train.images) & rows(reference.held_out.images)
    assert reference.train.labels[:200].unique().tolist() == list(range(10))  # shuffled, not label-sorted


def test_stratified_draw_keeps_label_proportions() -> None:
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    drawn = stratified_draw(labels, 100, seed=3)
    assert labels[drawn].bincount().tolist() == [60, 30, 10]
    assert torch.equal(drawn, stratified_draw(labels, 100, seed=3))
    with pytest.raises(ValueError, match="0 < N < 1000"):
        stratified_draw(labels, 1000)


def test_data_test_holds_out_samples_of_a_source_without_a_test_split(make_config) -> None:
    config = make_config(split="labels:0-4/5-9", data__test=40)
    plan = plan_data(config)
    assert plan.test_split is not None and plan.test_split.size == 40
    assert plan.test is not None and plan.test.labels.bincount().tolist() == [4] * 10
    assert len(plan.data) == 200
    for share in plan.shares.indices:
        assert not torch.isin(plan.source_index[share], plan.test_index).any()  # type: ignore[index,arg-type]
    none = plan_data(make_config())
    assert none.test is not None and len(none.test) == 0 and none.test_split.size == 0  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="data.test"):
        DataConfig(test=0)
    with pytest.raises(ValueError, match=r"data.test=2000 for data source 'fake:n=240'"):
        plan_data(make_config(data__test=2000))
    with pytest.raises(ValueError, match="has its own test split"):
        split_source("mnist", None, 100)


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as stream:
        stream.write(struct.pack(">IIII", 0x0803, len(images), 28, 28) + images.astype(np.uint8).tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as stream:
        stream.write(struct.pack(">II", 0x0801, len(labels)) + labels.astype(np.uint8).tobytes())


def test_idx_t10k_files_are_the_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path, "train", rng.integers(0, 255, (60, 28, 28)), np.arange(60) % 10)
    write_idx(tmp_path, "t10k", rng.integers(0, 255, (20, 28, 28)), np.arange(20) % 10)
    config = Config(data=DataConfig(source=f"mnist:{tmp_path}", split="labels:0-4/5-9"))
    plan = plan_data(config)
    assert len(plan.data) == 60 and plan.test is not None and len(plan.test) == 20
    assert plan.test_split is not None and "t10k" in plan.test_split.how
    assert plan.test_index.tolist() == list(range(60, 80))  # type: ignore[union-attr]
    for share in plan.shares.indices:
        assert not rows(plan.data.images[share]) & rows(plan.test.images)
    with pytest.raises(ValueError, match="has its own test split"):
        split_source(f"mnist:{tmp_path}", None, 5)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match="missing t10k-labels-idx1-ubyte"):
        split_source(f"mnist:{tmp_path}", None, None)


def test_parties_json_and_the_report_state_the_test_split(make_config, tmp_path: Path) -> None:
    train(make_config(rounds=3, data__test=40), tmp_path, quiet=True)
    public = json.loads((tmp_path / "parties.json").read_text())
    assert public[TEST_SPLIT_KEY]["size"] == 40 and public[TEST_SPLIT_KEY]["source"] == "fake:n=240"
    assert sum(info["samples"] for key, info in public.items() if key != TEST_SPLIT_KEY) == 200
    assert sorted(PartyLabels.load(tmp_path / "parties.json").samples) == [0, 1]
    assert main(["report", str(tmp_path)]) == 0
    assert "test split (no party holds it)" in (tmp_path / "report.html").read_text()


def test_audit_runs_on_a_default_config_run(tmp_path: Path) -> None:
    """The default data (bundled MNIST, labels:0-4/5-9, no data.limit): the test split is the audit's
    non-members, so the audit no longer refuses (a tiny model and 3 rounds: only the data matters here)."""
    config = Config()
    config.model.hidden, config.model.latent_dim = 32, 16
    config.train.rounds, config.train.batch_size = 3, 16
    config.output.metrics = ()
    train(config, tmp_path, quiet=True)
    assert main(["audit", str(tmp_path), "--samples", "100", "--max-reference", "200"]) == 0
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["held_out"]["count"] == 1000 and "test split" in audit["held_out"]["source"]
    assert sorted(audit["parties"]) == ["0", "1"]
    assert audit["parties"]["0"]["labels"] == [0, 1, 2, 3, 4] and audit["parties"]["0"]["members"] == 200

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from distgan.data import load_source, partition
from distgan.data.partition import parse_label_groups


@pytest.fixture(scope="module")
def mnist():
    return load_source("mnist")


def labels_of(data, index):
    return sorted(int(v) for v in data.labels[index].unique())


def test_bundled_mnist_is_real_and_complete(mnist):
    assert mnist.shape == (1, 28, 28) and len(mnist) == 5000
    assert torch.bincount(mnist.labels).tolist() == [500] * 10


@pytest.mark.parametrize("spec, parties, expected", [
    ("labels:0-4/5-9", 2, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
    ("labels:6/9", 2, [[6], [9]]),
    ("labels:4/7", 2, [[4], [7]]),
    ("labels:0,2,4/1,3/5-9", 3, [[0, 2, 4], [1, 3], [5, 6, 7, 8, 9]]),
    ("one-label", 10, [[k] for k in range(10)]),
])
def test_label_partitions_give_exactly_the_asked_sets(mnist, spec, parties, expected):
    shares = partition(mnist, spec, parties, seed=0)
    assert [labels_of(mnist, index) for index in shares.indices] == expected
    for index, labels in zip(shares.indices, expected):
        assert len(index) == 500 * len(labels)


def test_iid_is_disjoint_and_complete(mnist):
    shares = partition(mnist, "iid", 3, seed=1)
    joined = torch.cat(shares.indices)
    assert len(joined) == len(mnist) == len(joined.unique())


def test_dirichlet_is_disjoint_nonempty_and_skewed(mnist):
    shares = partition(mnist, "dirichlet:0.1", 10, seed=0)
    joined = torch.cat(shares.indices)
    assert len(joined.unique()) == len(joined) == len(mnist)
    assert all(len(index) > 0 for index in shares.indices)
    assert min(len(labels_of(mnist, index)) for index in shares.indices) < 10


def test_dirichlet_with_many_parties_has_no_empty_party(mnist):
    shares = partition(mnist, "dirichlet:0.3", 100, seed=0)
    assert all(len(index) > 0 for index in shares.indices)


@pytest.mark.parametrize("spec, parties, message", [
    ("labels:0-4/5-9", 3, "2 groups but --parties is 3"),
    ("labels:0-4/5-11", 2, "label 10 is not in"),
    ("labels:a-b/1", 2, "malformed label item"),
    ("labels:5-1/2", 2, "malformed label item"),
    ("one-label", 11, "only 10 labels"),
    ("dirichlet:x", 2, "ALPHA must be a number"),
    ("dirichlet:-1", 2, "ALPHA must be positive"),
    ("iid", 6000, "only 5000 samples"),
    ("nosuch", 2, "unknown split 'nosuch'; valid:"),
])
def test_bad_splits_are_named(mnist, spec, parties, message):
    with pytest.raises(ValueError, match=message):
        partition(mnist, spec, parties, seed=0)


def test_label_group_parser():
    assert parse_label_groups("0-2,5/7") == [[0, 1, 2, 5], [7]]


def write_idx(path, magic, array, truncate=0):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    payload = payload[:len(payload) - truncate] if truncate else payload
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as stream:
        stream.write(payload)


def test_mnist_idx_folder_reads_plain_and_gz(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (12, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 0x0803, images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", 0x0801, np.arange(12) % 10)
    data = load_source(f"mnist:{tmp_path}")
    assert len(data) == 12 and data.shape == (1, 28, 28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images.astype(np.uint8)))


@pytest.mark.parametrize("problem, message", [
    ("magic", "wrong IDX magic"), ("truncated", "truncated"), ("missing", "missing train-labels"),
])
def test_bad_idx_files_are_named(tmp_path, problem, message):
    images = np.zeros((4, 28, 28))
    write_idx(tmp_path / "train-images-idx3-ubyte", 0x0803 if problem != "magic" else 0x0801, images,
              truncate=10 if problem == "truncated" else 0)
    if problem != "missing":
        write_idx(tmp_path / "train-labels-idx1-ubyte", 0x0801, np.arange(4))
    with pytest.raises(ValueError, match=message):
        load_source(f"mnist:{tmp_path}")


def test_image_folder_with_label_subfolders_is_resized(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / label / f"{k}.png")
    data = load_source(f"folder:{tmp_path}", image_size=32)
    assert data.shape == (3, 32, 32) and sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_corrupt_image_is_named(tmp_path):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_source(f"folder:{tmp_path}", image_size=8)


@pytest.mark.parametrize("spec, message", [
    ("nosuch", "unknown data source 'nosuch'; valid:"),
    ("folder:/definitely/not/here", "no such folder"),
    ("mnist:/definitely/not/here", "no such folder"),
    ("fake:n=0", "must be positive"),
    ("fake:colour=1", "unknown option"),
])
def test_bad_sources_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        load_source(spec)


def test_empty_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        load_source(f"folder:{tmp_path}")

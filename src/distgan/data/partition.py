"""Divide a data source among parties, from a spec string.

``iid``                 random equal shares
``labels:0-4/5-9``      one label group per party: ``/`` separates parties, ``a-b`` ranges, ``,`` lists
``one-label``           party k gets the k-th label
``dirichlet:ALPHA``     per-label shares drawn from Dirichlet(ALPHA) (small ALPHA: very non-iid)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distgan.data.sources import LabelledImages
from distgan.registry import Registry


@dataclass(frozen=True)
class Partition:
    indices: list[torch.Tensor]
    """Per party, the indices of its samples in the source."""

    def describe(self, data: LabelledImages) -> list[str]:
        lines = []
        for party, index in enumerate(self.indices):
            labels = data.labels[index]
            present = sorted(int(v) for v in labels.unique() if v >= 0)
            lines.append(f"party {party}: {len(index)} samples, labels {present or 'none'}")
        return lines


Splitter = Callable[[LabelledImages, str, int, torch.Generator], list[torch.Tensor]]
SPLITS: Registry[Splitter] = Registry("split")


def partition(data: LabelledImages, spec: str, parties: int, seed: int) -> Partition:
    """Split ``data`` among ``parties`` as ``spec`` says; every failure names the problem."""
    name, _, arg = spec.partition(":")
    splitter = SPLITS.get(name)
    generator = torch.Generator().manual_seed(seed)
    if name != "iid" and not data.has_labels:
        raise ValueError(f"split {spec!r} needs labels, but {data.name} has none; use 'iid'")
    indices = splitter(data, arg, parties, generator)
    if len(indices) != parties:
        raise ValueError(f"split {spec!r} describes {len(indices)} parties but --parties is {parties}")
    for party, index in enumerate(indices):
        if len(index) == 0:
            raise ValueError(f"split {spec!r}: party {party} would receive no samples")
    return Partition(indices)


@SPLITS.register("iid", "random equal shares")
def _iid(data: LabelledImages, arg: str, parties: int, generator: torch.Generator) -> list[torch.Tensor]:
    if arg:
        raise ValueError(f"split 'iid' takes no argument, got 'iid:{arg}'")
    if parties > len(data):
        raise ValueError(f"{parties} parties but only {len(data)} samples in {data.name}")
    order = torch.randperm(len(data), generator=generator)
    return list(torch.tensor_split(order, parties))


def parse_label_groups(arg: str) -> list[list[int]]:
    """``0-4/5-9`` -> [[0..4], [5..9]]; ``6/9``; ``0,2,4/1,3``."""
    if not arg:
        raise ValueError("split 'labels' needs groups, e.g. labels:0-4/5-9")
    groups = []
    for group_text in arg.split("/"):
        labels: list[int] = []
        for item in group_text.split(","):
            item = item.strip()
            try:
                if "-" in item:
                    low, high = (int(v) for v in item.split("-", 1))
                    if low > high:
                        raise ValueError
                    labels.extend(range(low, high + 1))
                else:
                    labels.append(int(item))
            except ValueError:
                raise ValueError(f"split 'labels:{arg}': malformed label item {item!r} "
                                 "(use a, a-b, a,b; '/' between parties)") from None
        groups.append(labels)
    return groups


@SPLITS.register("labels", "one label group per party, e.g. labels:0-4/5-9")
def _labels(data: LabelledImages, arg: str, parties: int, generator: torch.Generator) -> list[torch.Tensor]:
    groups = parse_label_groups(arg)
    if len(groups) != parties:
        raise ValueError(f"split 'labels:{arg}' has {len(groups)} groups but --parties is {parties}")
    present = {int(v) for v in data.labels.unique()}
    result = []
    for group in groups:
        for label in group:
            if label not in present:
                raise ValueError(f"split 'labels:{arg}': label {label} is not in {data.name} "
                                 f"(labels present: {sorted(present)})")
        mask = torch.isin(data.labels, torch.tensor(group))
        index = mask.nonzero().flatten()
        result.append(index[torch.randperm(len(index), generator=generator)])
    return result


@SPLITS.register("one-label", "party k gets the k-th label")
def _one_label(data: LabelledImages, arg: str, parties: int, generator: torch.Generator) -> list[torch.Tensor]:
    labels = sorted(int(v) for v in data.labels.unique())
    if parties > len(labels):
        raise ValueError(f"split 'one-label' with {parties} parties, but {data.name} has only "
                         f"{len(labels)} labels")
    return _labels(data, "/".join(str(label) for label in labels[:parties]), parties, generator)


@SPLITS.register("dirichlet", "per-label shares from Dirichlet(ALPHA), e.g. dirichlet:0.3")
def _dirichlet(data: LabelledImages, arg: str, parties: int, generator: torch.Generator) -> list[torch.Tensor]:
    try:
        alpha = float(arg)
    except ValueError:
        raise ValueError(f"split 'dirichlet:{arg}': ALPHA must be a number, e.g. dirichlet:0.3") from None
    if not alpha > 0:
        raise ValueError(f"split 'dirichlet:{arg}': ALPHA must be positive")
    if parties > len(data):
        raise ValueError(f"{parties} parties but only {len(data)} samples in {data.name}")
    concentration = torch.full((parties,), alpha, dtype=torch.float64)
    # Redraw a few times when a party comes out empty (likely for tiny alpha and many parties);
    # after that, hand each empty party one sample from the largest, so no party is ever empty.
    for _ in range(20):
        shares: list[list[torch.Tensor]] = [[] for _ in range(parties)]
        for label in data.labels.unique():
            index = (data.labels == label).nonzero().flatten()
            index = index[torch.randperm(len(index), generator=generator)]
            proportions = torch._standard_gamma(concentration, generator=generator)
            proportions = proportions / proportions.sum()
            cuts = (proportions.cumsum(0) * len(index)).round().long().tolist()[:-1]
            for party, piece in enumerate(torch.tensor_split(index, cuts)):
                shares[party].append(piece)
        result = [torch.cat(pieces) for pieces in shares]
        if all(len(r) for r in result):
            return result
    for party in range(parties):
        if len(result[party]) == 0:
            donor = max(range(parties), key=lambda p: len(result[p]))
            result[party], result[donor] = result[donor][:1], result[donor][1:]
    return result

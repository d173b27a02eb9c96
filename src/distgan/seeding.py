"""Seeds derived by name, so every random stream of a run is independent and reproducible."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


def derive_seed(base: int, *names: object) -> int:
    """A 63-bit seed from a base seed and a path of names (e.g. ``derive_seed(0, "party", 3)``)."""
    digest = hashlib.sha256(repr((base, *names)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(base: int, *names: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(base, *names))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Run a block (building a network, a party's D steps) under a fixed global seed, leaving the global
    RNG as it was: the CPU generator, and that of ``device`` when it is a GPU (where dropout draws).
    Seeds the generators directly: ``torch.manual_seed`` visits every backend and costs ~100x more,
    which a party pays on every request."""
    where = torch.device("cpu" if device is None else device)
    index = None
    if where.type == "cuda":
        index = where.index if where.index is not None else torch.cuda.current_device()
    with torch.random.fork_rng(devices=[] if index is None else [index]):
        torch.random.default_generator.manual_seed(seed)
        if index is not None:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def draw_seed(generator: torch.Generator) -> int:
    """A seed drawn from a generator (to run a block under :func:`seeded`, reproducibly from that stream)."""
    return int(torch.randint(1 << 62, (1,), generator=generator))

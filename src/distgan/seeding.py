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
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a network) under a fixed global seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def draw_seed(generator: torch.Generator) -> int:
    """A seed drawn from a generator (to run a block under :func:`seeded`, reproducibly from that stream)."""
    return int(torch.randint(1 << 62, (1,), generator=generator))

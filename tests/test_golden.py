"""Golden losses: a short seeded CPU run of every strategy, its losses pinned in tests/golden/losses.json.

The parity tests compare two runtimes of the same commit, so a change that shifts every runtime alike
(a loss, an initialisation, the order of random draws) passes them; it fails here. A change that is
*meant* to change the numbers regenerates the file and says why in its commit message::

    PYTHONPATH=src python -m tests.test_golden            # from the repository root; rewrites the file

A strategy without pinned numbers fails too (a new strategy regenerates the file once, with its test).
Runs: fake data, 2 parties, 3 rounds, tiny MLP, one torch thread, seed 0 (about a second each).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from distgan import run_folder
from distgan.strategies import STRATEGIES
from distgan.training import train
from tests.conftest import tiny_config

GOLDEN = Path(__file__).resolve().parent / "golden" / "losses.json"
ROUNDS = 3
REGENERATE = "PYTHONPATH=src python -m tests.test_golden"


def losses_of(strategy: str, root: Path) -> dict[str, Any]:
    """Per round: G's loss and each party's D loss, of a fresh seeded run."""
    torch.set_num_threads(1)
    run_dir = root / strategy
    run_dir.mkdir(parents=True)
    train(tiny_config(strategy, rounds=ROUNDS), run_dir, quiet=True, embedded=True)
    stats = run_folder.read_stats(run_dir)
    return {"g_loss": [record["g_loss"] for record in stats],
            "d_loss": [[record["parties"][j]["d_loss"] for j in sorted(record["parties"], key=int)]
                       for record in stats]}


def pinned() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())["strategies"] if GOLDEN.exists() else {}


@pytest.mark.parametrize("strategy", STRATEGIES.names())
def test_losses_match_the_pinned_numbers(strategy: str, tmp_path: Path) -> None:
    expected = pinned().get(strategy)
    assert expected is not None, f"{GOLDEN} has no numbers for strategy {strategy!r}: run {REGENERATE}"
    got = losses_of(strategy, tmp_path)
    flat = [got["g_loss"], *got["d_loss"]]
    assert [len(row) for row in flat] == [len(row) for row in [expected["g_loss"], *expected["d_loss"]]] and all(
        row == pytest.approx(pinned_row, rel=1e-4, abs=1e-6)
        for row, pinned_row in zip(flat, [expected["g_loss"], *expected["d_loss"]], strict=True)), (
        f"{strategy}: losses moved from the pinned ones. If the change was meant to change them, run "
        f"{REGENERATE} and say why in the commit; if not, it is a bug.\n got {got}\n pinned {expected}")


def regenerate() -> None:
    with tempfile.TemporaryDirectory() as root:
        numbers = {name: losses_of(name, Path(root)) for name in STRATEGIES.names()}
    GOLDEN.parent.mkdir(exist_ok=True)
    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps(values)}" for name, values in numbers.items())
    GOLDEN.write_text(f'{{"regenerate": {json.dumps(REGENERATE)}, "torch": {json.dumps(torch.__version__)}, '
                      f'"rounds": {ROUNDS},\n "strategies": {{\n{rows}\n}}}}\n')
    print(f"wrote {GOLDEN}: {', '.join(numbers)}", file=sys.stderr)


if __name__ == "__main__":
    regenerate()

"""The run folder: its layout, file names, readers and writers, checkpoint stems and pruning.

Every module that reads or writes a run folder goes through here, so a name is spelled once::

    RUN_DIR/
      config.json          the run's Config (written first; what --resume and every reader load)
      parties.json         per party: samples and label counts (public counts from Describe); "test": the
                           run's test split (source, size, how chosen), which no party holds
      stats.jsonl          one JSON line per round (losses, bytes, seconds)
      metrics.jsonl        {"round", "elapsed_s", "metrics"} every output.eval_every rounds and at the end
      log.txt              the run's log
      losses.png           loss plot (end of run)
      report.html          the run's report; audit.json: the leakage audit (distgan audit)
      health.json          written when training collapsed (distgan.health): when and why
      run-id               the run's id on Flower (made once, kept across resumes)
      samples/round-NNNNNNN.png        sample grids of fixed latents
      checkpoints/round-NNNNNNN.{json,safetensors}   the coordinator's checkpoints (newest two kept)
      parties/party-J/round-NNNNNNN.{json,safetensors}  each local party's own state (newest two kept)

A checkpoint is a *stem* (``round-NNNNNNN``) with two files; its JSON is written last, so a stem
whose JSON exists is complete unless damaged (:func:`newest_intact` skips damaged ones).
Imports nothing of distgan but the config and checkpoint modules: any module may use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distgan.checkpoint import CheckpointError, atomic_write_text, load_checkpoint
from distgan.config import Config

CONFIG = "config.json"
PARTIES = "parties.json"
TEST_SPLIT = "test"
"""The key of parties.json that states the test split (every other key is a party number)."""
STATS = "stats.jsonl"
METRICS = "metrics.jsonl"
LOG = "log.txt"
LOSSES = "losses.png"
REPORT = "report.html"
AUDIT = "audit.json"
HEALTH = "health.json"
RUN_ID = "run-id"
SAMPLES = "samples"
CHECKPOINTS = "checkpoints"
PARTY_STATES = "parties"
KEEP_CHECKPOINTS = 2
"""The newest checkpoint and the previous good one (a crash while writing the newest leaves that)."""


class RunFolderError(ValueError):
    """The output folder cannot be used as asked, or a folder is not a run."""


# -- checkpoints ---------------------------------------------------------------------------------------
def round_stem(folder: Path, round_number: int) -> Path:
    """``folder/round-NNNNNNN``: a checkpoint's two files are this plus ``.json`` / ``.safetensors``."""
    return folder / f"round-{round_number:07d}"


def checkpoint_stems(folder: Path) -> list[Path]:
    """The checkpoint stems in ``folder`` (those with a JSON record), oldest first."""
    return sorted({path.with_suffix("") for path in folder.glob("round-*.json")})


def prune_checkpoints(folder: Path, keep: int = KEEP_CHECKPOINTS) -> None:
    """Delete all but the newest ``keep`` checkpoints in ``folder``."""
    for stem in checkpoint_stems(folder)[:-keep]:
        for suffix in (".json", ".safetensors"):
            stem.with_suffix(suffix).unlink(missing_ok=True)


def newest_intact(folder: Path, round_number: int | None = None,
                  on_skip: Callable[[CheckpointError], None] | None = None, purpose: str = "",
                  ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and meta of the newest checkpoint in ``folder`` that loads (or of ``round_number``),
    skipping damaged ones (``on_skip`` hears of each); CheckpointError naming the folder when none
    (``purpose``, e.g. "to resume from", completes its message)."""
    stems = checkpoint_stems(folder)
    if round_number is not None:
        stems = [s for s in stems if s == round_stem(folder, round_number)]
        if not stems:
            raise CheckpointError(f"{folder}: no checkpoint of round {round_number}")
    errors = []
    for stem in reversed(stems):
        try:
            return load_checkpoint(stem)
        except CheckpointError as error:
            errors.append(str(error))
            if on_skip is not None:
                on_skip(error)
    raise CheckpointError(f"{folder}: no usable checkpoint{' ' + purpose if purpose else ''} "
                          f"({'; '.join(errors) or 'none written yet'})")


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / CHECKPOINTS


def party_state_dir(run_dir: Path, party: int) -> Path:
    """Where a local party keeps its own state (on Flower each node keeps it in its own --state-dir)."""
    return run_dir / PARTY_STATES / f"party-{party}"


def sample_grid_path(run_dir: Path, round_number: int) -> Path:
    return run_dir / SAMPLES / f"round-{round_number:07d}.png"


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of every sample grid, by round."""
    found = []
    for image in (run_dir / SAMPLES).glob("round-*.png"):
        match = re.fullmatch(r"round-(\d+)\.png", image.name)
        if match:
            found.append((int(match.group(1)), image))
    return sorted(found)


# -- config and parties ----------------------------------------------------------------------------------
def write_config(run_dir: Path, config: Config) -> None:
    atomic_write_text(run_dir / CONFIG, config.to_json())


def load_config(run_dir: Path) -> Config:
    """The run's config; RunFolderError when ``run_dir`` is not a run folder."""
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: no such run folder")
    path = run_dir / CONFIG
    if not path.is_file():
        raise RunFolderError(f"{run_dir}: not a distgan run (no {CONFIG})")
    return Config.load(path)


def write_parties(run_dir: Path, parties: dict[int, dict[str, Any]], test_split: dict[str, Any] | None = None) -> None:
    """``parties.json``: per party its public counts (``samples``, ``label_counts``); under :data:`TEST_SPLIT`
    the run's test split (source, size, how chosen: ``distgan.data.splits``), which no party holds."""
    public: dict[str, Any] = {str(j): parties[j] for j in sorted(parties)}
    if test_split is not None:
        public[TEST_SPLIT] = test_split
    atomic_write_text(run_dir / PARTIES, json.dumps(public, indent=1))


def _read_parties_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / PARTIES
    return json.loads(path.read_text()) if path.exists() else {}


def read_parties(run_dir: Path) -> dict[str, Any]:
    """Per party (keys "0", "1", ...) its public counts; the test split's statement is left out."""
    return {key: value for key, value in _read_parties_file(run_dir).items() if key != TEST_SPLIT}


def read_test_split(run_dir: Path) -> dict[str, Any] | None:
    """parties.json's statement of the run's test split; None for a run from before test splits."""
    statement = _read_parties_file(run_dir).get(TEST_SPLIT)
    return statement if isinstance(statement, dict) else None


# -- JSON lines: stats and metrics -----------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, up to a line cut by a crash; [] when it does not exist."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def truncate_jsonl(path: Path, last_round: int) -> None:
    """Drop lines of rounds after ``last_round`` (they are redone after a resume)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("round", 0) <= last_round:
                kept.append(line)
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything after it is gone anyway
    path.write_text("".join(line + "\n" for line in kept))


def read_stats(run_dir: Path) -> list[dict[str, Any]]:
    """One record per round from ``stats.jsonl``."""
    return read_jsonl(run_dir / STATS)


def append_metrics(run_dir: Path, round_number: int, values: dict[str, Any], elapsed_s: float | None) -> None:
    line = {"round": round_number, "elapsed_s": elapsed_s, "metrics": values}
    with (run_dir / METRICS).open("a") as stream:
        stream.write(json.dumps(line) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Lines of ``metrics.jsonl``, one per round (a later line of the same round merges over an earlier)."""
    by_round: dict[int, dict[str, Any]] = {}
    for line in read_jsonl(run_dir / METRICS):
        entry = by_round.setdefault(int(line["round"]), {"round": int(line["round"]), "metrics": {}})
        entry["elapsed_s"] = line.get("elapsed_s")
        entry["metrics"].update(line.get("metrics", {}))
    return [by_round[r] for r in sorted(by_round)]

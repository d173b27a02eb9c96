"""Atomic, checksummed checkpoints: safetensors for tensors, a small JSON beside for the rest.

A file is written to a temporary name, flushed, fsynced and renamed into place, so a crash leaves
either the old file or the new one, never half of one. The JSON records the SHA-256 of the
safetensors file; loading checks it, so a truncated or corrupted checkpoint is detected, named,
and never silently loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or of another run."""


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None:  # a failed write() names no file: name the one it was for
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(stem: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``stem.safetensors`` then ``stem.json`` (the JSON last: its presence marks completion)."""
    payload = save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(stem.with_suffix(".safetensors"), payload)
    record = {"sha256": hashlib.sha256(payload).hexdigest(), "meta": meta}
    atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=1, sort_keys=True))


def load_checkpoint(stem: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors_path, json_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not json_path.is_file() or not tensors_path.is_file():
        raise CheckpointError(f"{stem}: checkpoint incomplete (need {tensors_path.name} and {json_path.name})")
    try:
        record = json.loads(json_path.read_text())
        expected = record["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{json_path}: corrupted checkpoint record ({error})") from None
    payload = tensors_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(f"{tensors_path}: checksum mismatch (truncated or corrupted)")
    return load_safetensors(payload), record["meta"]


# -- optimizer and RNG state as (tensors, json) -----------------------------------------------------
def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/{index}/{name}"] = value
            else:
                plain.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor],
                           meta: Any) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}/"):
            _, index, name = key.split("/", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["plain"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(f"{prefix}/")}

"""Protocol messages <-> Flower records: the only place that knows both.

A :mod:`distgan.protocol` message becomes one ``RecordDict``: its tensors in the ArrayRecord
``tensors`` (NumPy ``.npy`` bytes, never pickle), its scalars in the ConfigRecord ``scalars``, and
an ``envelope`` ConfigRecord with the message kind, the session it belongs to and transport facts
(the sender's party id, the seconds the party spent on it). Requests travel as Flower message type
``train.*`` / ``query.*``, which is the protocol kind itself.

Decoding refuses anything that is not exactly a protocol message: unknown kinds, extra fields,
scalar values of other types; the receiver then validates shapes and sizes as with any runtime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from distgan import protocol as p

TENSORS = "tensors"
SCALARS = "scalars"
ENVELOPE = "envelope"

Envelope = dict[str, int | float | str | bool]


def to_content(message: p.Message, envelope: Envelope | None = None) -> RecordDict:
    kind, tensors, scalars = p.encode(message)
    return RecordDict({
        TENSORS: ArrayRecord({name: Array(tensor.numpy()) for name, tensor in tensors.items()}),
        SCALARS: ConfigRecord(dict(scalars)),
        ENVELOPE: ConfigRecord({"kind": kind, **(envelope or {})}),
    })


def envelope_of(content: RecordDict) -> Envelope:
    record = content.config_records.get(ENVELOPE)
    if record is None:
        raise p.ProtocolError("message without envelope record: not a distgan message")
    return dict(record)  # type: ignore[arg-type]


def from_content(content: RecordDict) -> p.Message:
    """Rebuild the protocol message carried by ``content``; ProtocolError when it is not one."""
    kind = envelope_of(content).get("kind")
    if not isinstance(kind, str):
        raise p.ProtocolError(f"envelope kind {kind!r} is not a message kind")
    unexpected = set(content) - {TENSORS, SCALARS, ENVELOPE}
    if unexpected:
        raise p.ProtocolError(f"{kind}: unexpected records {sorted(unexpected)}")
    tensors: dict[str, torch.Tensor] = {}
    array_record = content.array_records.get(TENSORS)
    for name, array in (array_record or {}).items():
        try:
            values = array.numpy()
        except (TypeError, ValueError) as error:
            raise p.ProtocolError(f"{kind}.{name}: unreadable array ({error})") from None
        if values.dtype.kind not in "biuf":
            raise p.ProtocolError(f"{kind}.{name}: arrays of dtype {values.dtype} are not allowed")
        tensors[name] = torch.from_numpy(np.array(values, copy=True))
    scalars: dict[str, Any] = dict(content.config_records.get(SCALARS) or {})
    for name, value in scalars.items():
        if not isinstance(value, (int, float, str, bool)):
            raise p.ProtocolError(f"{kind}.{name}: scalar of type {type(value).__name__} is not allowed")
    return p.decode(kind, tensors, scalars)

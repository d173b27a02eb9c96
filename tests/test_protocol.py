"""protocol.encode/decode: every message round-trips, and decode refuses what is not in the message."""

from __future__ import annotations

import pytest
import torch

from distgan import protocol as p


def test_decode_refuses_unknown_scalar_fields() -> None:
    stats = p.DiscriminatorStats(d_loss=1.0, d_real=0.5, d_fake=0.5)
    kind, tensors, scalars = p.encode(p.WeightsReply(stats, g_loss=0.25))
    assert p.decode(kind, tensors, scalars) == p.WeightsReply(stats, g_loss=0.25)
    for extra in ({"sneaky": 1}, {"stats/sneaky": 1.0}, {"g_loss/x": 1.0}, {"stats": 1.0}, {"direction": "up"}):
        with pytest.raises(p.ProtocolError, match="unexpected scalar field"):
            p.decode(kind, tensors, {**scalars, **extra})
    kind, tensors, scalars = p.encode(p.SaveState(3))
    with pytest.raises(p.ProtocolError, match="unexpected scalar field 'epoch'"):
        p.decode(kind, tensors, {**scalars, "epoch": 1})


def test_decode_refuses_unknown_tensor_fields() -> None:
    kind, tensors, scalars = p.encode(p.TrainDiscriminator(torch.randn(1, 2, 1, 4, 4)))
    with pytest.raises(p.ProtocolError, match="unexpected field 'extra'"):
        p.decode(kind, {**tensors, "extra": torch.zeros(1)}, scalars)

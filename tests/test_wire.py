"""Messages across a worker pipe (``--workers``): one buffer per message, the same message out."""

from __future__ import annotations

import pytest
import torch

from distgan import protocol as p
from distgan.runtime.local import INLINE_BYTES, from_wire, to_wire


def messages(steps: int) -> list[p.Message]:
    generator = {"layers.0.weight": torch.randn(5, 3), "layers.0.bias": torch.randn(5),
                 "norm.num_batches_tracked": torch.tensor(7)}
    adam = {"0/exp_avg": torch.randn(5, 3), "0/exp_avg_sq": torch.rand(5, 3), "0/step": torch.tensor(3.0)}
    stats = p.DiscriminatorStats(d_loss=0.5, d_real=0.6, d_fake=0.4, steps=steps, epsilon=1.5)
    return [p.TrainDiscriminator(torch.randn(steps, 64, 1, 28, 28), feedback=True),
            p.Feedback(stats, torch.randn(steps, 64), torch.randn(steps, 64, 1, 28, 28)),
            p.DeltaUpload(stats, torch.arange(11), torch.randn(11)),
            p.TrainGeneratorEpoch(generator, adam), p.TrainGeneratorEpoch(generator, {}),
            p.GeneratorReply(stats, generator, adam, 0.25, steps),
            p.GenerateAndUpload(steps, 0.1, "largest", generator, torch.arange(4), torch.randn(4)),
            p.Describe(), p.Ack(), p.SaveState(12)]


@pytest.mark.parametrize("steps", [1, 8])  # 8 steps of 64 images: over INLINE_BYTES, so shared memory
def test_every_message_comes_out_as_it_went_in(steps):
    for message in messages(steps):
        wire = to_wire(message)
        payload = wire[3]
        large = sum(t.numel() * t.element_size() for t in p.encode(message)[1].values()) >= INLINE_BYTES
        assert isinstance(payload, torch.Tensor) == large and (not large or payload.is_shared())
        back = from_wire(wire)
        assert type(back) is type(message) and back.scalars() == message.scalars()
        ours, theirs = p.encode(message)[1], p.encode(back)[1]
        assert ours.keys() == theirs.keys()
        for name, tensor in ours.items():
            assert theirs[name].dtype == tensor.dtype and torch.equal(theirs[name], tensor), name


def test_an_unknown_dtype_on_the_wire_is_refused():
    kind, layout, scalars, payload = to_wire(p.DeltaUpload(p.DiscriminatorStats(), torch.arange(2), torch.ones(2)))
    layout = [(name, "complex64" if name == "values" else dtype, shape, start) for name, dtype, shape, start in layout]
    with pytest.raises(p.ProtocolError, match="complex64 cannot travel"):
        from_wire((kind, layout, scalars, payload))

"""G's weight average (train.g_average) and the seeded randomness of the parties' dropout."""

from __future__ import annotations

import pytest
import torch

from distgan.config import ModelConfig, TrainConfig
from distgan.generator import GeneratorTrainer
from distgan.models import build_models
from distgan.seeding import draw_seed, make_generator, seeded


def trainer(g_average: float | None) -> GeneratorTrainer:
    factory = build_models(ModelConfig(name="mlp", hidden=16, latent_dim=8), (1, 28, 28))
    return GeneratorTrainer(factory, TrainConfig(g_average=g_average), seed=0, device=torch.device("cpu"))


def test_without_an_average_the_output_is_the_trained_generator() -> None:
    plain = trainer(None)
    assert plain.average is None and plain.output_module is plain.module
    plain.update_average(1)  # a no-op, not an error


def test_average_follows_the_ramped_decay_for_weights_and_batch_norm_buffers() -> None:
    averaged = trainer(0.999)
    assert averaged.output_module is averaged.average
    before = {k: v.clone() for k, v in averaged.average.state_dict().items()}  # type: ignore[union-attr]
    with torch.no_grad():  # move G as a training step would, weights and running statistics alike
        for value in averaged.module.state_dict().values():
            if value.is_floating_point():
                value.add_(1.0)
    averaged.update_average(round_number=5)
    decay = min(0.999, (1 + 5) / (10 + 5))  # the ramp, not 0.999, this early
    after = averaged.average.state_dict()  # type: ignore[union-attr]
    for name, value in averaged.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(after[name], before[name] + (1.0 - decay))
        else:
            assert torch.equal(after[name], value)  # counters are copied
    assert any("running_mean" in name for name in after)


def test_seeded_block_repeats_dropout_masks_and_leaves_the_global_stream_alone() -> None:
    dropout = torch.nn.Dropout(0.5)
    ones = torch.ones(1000)
    masks = []
    for _ in range(2):
        stream = make_generator(7, "party", 0)
        global_before = torch.random.get_rng_state()
        with seeded(draw_seed(stream)):
            masks.append(dropout(ones))
        assert torch.equal(torch.random.get_rng_state(), global_before)
    assert torch.equal(masks[0], masks[1])
    assert 300 < int((masks[0] == 0).sum()) < 700


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.5, 1.5])
def test_g_average_outside_the_open_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="train.g_average"):
        TrainConfig(g_average=bad)

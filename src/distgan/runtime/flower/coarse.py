"""Message size on Flower: what one message of a run carries, and the budget it must fit.

Flower runs the config as given: ``train.rounds`` rounds of ``train.local_steps`` steps each, as
``distgan train`` does (one meaning of ``--rounds`` everywhere). Nothing packs more steps into a
message behind the user's back: for the feedback strategies that would change the algorithm
(:mod:`distgan.health`). What stays here is the budget: strategies that exchange per-step feedback
carry one batch of generated images down and one batch of gradients up per step, so a message
grows with the steps; a run whose message would exceed ``MESSAGE_BUDGET_BYTES`` is refused before
any process starts (a 700 MB message made each ClientApp take ~3 GB).
"""

from __future__ import annotations

import math

from distgan.config import Config

MESSAGE_BUDGET_BYTES = 128 * 2**20
"""Generated images (float32) one message may carry each way."""
MAX_LOCAL_STEPS = 2000


def deployment_local_steps(image_shape: tuple[int, int, int], batch_size: int) -> int:
    """The most steps per message whose generated images fit the message budget (at least 1)."""
    bytes_per_step = batch_size * math.prod(image_shape) * 4
    return max(1, min(MAX_LOCAL_STEPS, MESSAGE_BUDGET_BYTES // bytes_per_step))


def message_bytes(config: Config, image_shape: tuple[int, int, int]) -> int:
    """Generated images one feedback message carries at this config (float32)."""
    return config.train.local_steps * config.train.batch_size * math.prod(image_shape) * 4


def check_message_budget(config: Config, image_shape: tuple[int, int, int]) -> None:
    """Refuse a run whose messages would exceed the budget, naming what to change (strategies that
    send weights, fedgan and local-only, send the same bytes whatever the steps)."""
    from distgan.strategies import STRATEGIES

    if not STRATEGIES.get(config.strategy.name).sends_fakes(config):  # a batch of generated images per step
        return
    size = message_bytes(config, image_shape)
    if size > MESSAGE_BUDGET_BYTES:
        fits = deployment_local_steps(image_shape, config.train.batch_size)
        raise ValueError(
            f"train.local_steps={config.train.local_steps} at batch {config.train.batch_size} and "
            f"{'x'.join(map(str, image_shape))} images makes messages of {size / 2**20:.0f} MiB, over Flower's "
            f"{MESSAGE_BUDGET_BYTES // 2**20} MiB budget: use --local-steps {fits} or less, or smaller images "
            "(--set data.image_size=N)")

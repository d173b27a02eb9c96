"""The platform's generator: sampling latent vectors and fakes, and G's update rules.

G never sees a real sample. It is trained either on feedback the parties send back (their D's
logits and the gradient of each logit with respect to the generated image) or, for server-d,
directly against the server discriminator the platform assembles from weight deltas.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from distgan import protocol as p
from distgan.config import TrainConfig
from distgan.losses import GeneratorLoss, generator_input_gradient, generator_loss
from distgan.models import ModelFactory
from distgan.networks import adam, adam_state, build_generator, cpu_state_dict, load_adam_state, train_mode
from distgan.sampling import images_from_latents
from distgan.seeding import draw_seed, make_generator, seeded


@dataclass
class FakeBatches:
    """Generated batches ``[S, B, C, H, W]`` (detached, on CPU, to send) and the latents behind them.
    ``first_graph`` keeps the autograd graph of batch 0, so the usual one-step loop does not run G twice."""

    latents: torch.Tensor
    images: torch.Tensor
    first_graph: torch.Tensor | None


class GeneratorTrainer:
    def __init__(self, factory: ModelFactory, train: TrainConfig, seed: int, device: torch.device) -> None:
        self.factory = factory
        self.train_config = train
        self.device = device
        self.module: nn.Module = build_generator(factory, seed).to(device)
        self.optimizer = adam(self.module, train.lr_g, train)
        self.rng = make_generator(seed, "coordinator-latents")
        self.average: nn.Module | None = None if train.g_average is None else copy.deepcopy(self.module)
        self.average_clock = 0
        """Ticks of the average's ramp so far: rounds, or G steps for strategies passing ``g_steps``."""

    @property
    def output_module(self) -> nn.Module:
        """The generator whose samples are the run's output: the weight average when there is one."""
        return self.module if self.average is None else self.average

    @torch.no_grad()
    def update_average(self, round_number: int, g_steps: int | None = None) -> None:
        """Move the average towards G after round ``round_number`` (1-based). The decay ramps up from 0
        ((1 + t) / (10 + t)) so early rounds' random weights do not linger in the average. Float buffers
        (batch norm's running statistics) are averaged too, so they match the averaged weights.

        Per-batch strategies tick once per round (t = the round). Strategies whose G trains away from the
        platform for many steps in one round (round-robin with ``strategy.switch=epoch``) pass those
        ``g_steps``: the average then moves as if updated after each of them, from the round's final G
        (the decays of ticks t+1 .. t+g_steps multiplied), and the ramp's clock counts G steps."""
        if g_steps is None:
            ticks = [round_number]
            self.average_clock = round_number
        else:
            ticks = list(range(self.average_clock + 1, self.average_clock + g_steps + 1))
            self.average_clock += g_steps
        if self.average is None:
            return
        assert self.train_config.g_average is not None
        decay = 1.0
        for tick in ticks:
            decay *= min(self.train_config.g_average, (1 + tick) / (10 + tick))
        averaged = self.average.state_dict()
        for name, value in self.module.state_dict().items():
            if value.is_floating_point():
                averaged[name].lerp_(value, 1.0 - decay)
            else:
                averaged[name].copy_(value)

    def latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.factory.latent_dim, generator=self.rng)

    def fakes(self, steps: int, batch: int | None = None) -> FakeBatches:
        batch = batch or self.train_config.batch_size
        latents = self.latents(steps * batch).view(steps, batch, -1)
        train_mode(self.module)
        first = self.module(latents[0].to(self.device))
        images = [first.detach()]
        with torch.no_grad():
            images += [self.module(z.to(self.device)) for z in latents[1:]]
        return FakeBatches(latents, p.stacked(images), first)

    def step_on_feedback(self, batches: FakeBatches, feedback: Sequence[p.Feedback],
                         weights: torch.Tensor | None = None,
                         loss_of_logits: GeneratorLoss = generator_loss) -> float:
        """One G step per generated batch on the combined feedback of one or more discriminators
        (combined by ``loss_of_logits``: the paper's mean probability unless told otherwise).

        Step s uses G's current output for latents s: for s = 0 that is exactly the batch the
        parties scored; for s > 0 G has moved since, and their gradient is one step stale (the
        price of coarse rounds; ``local_steps = 1`` is exact).
        """
        logits = p.stacked([f.logits for f in feedback])  # [J, S, B]
        gradients = p.stacked([f.input_gradients for f in feedback])  # [J, S, B, C, H, W]
        losses = []
        for step in range(logits.shape[1]):
            loss, image_gradient = generator_input_gradient(logits[:, step], gradients[:, step], weights,
                                                           loss_of_logits)
            output = batches.first_graph if step == 0 and batches.first_graph is not None else \
                self.module(batches.latents[step].to(self.device))
            self.optimizer.zero_grad(set_to_none=True)
            output.backward(image_gradient.to(output))
            self.optimizer.step()
            losses.append(loss)
        batches.first_graph = None
        return sum(losses) / len(losses)

    def travelling_state(self) -> tuple[p.Weights, p.Weights]:
        """G's weights and Adam state as they travel to a party (CPU copies)."""
        return cpu_state_dict(self.module), adam_state(self.optimizer)

    def load_travelled_state(self, weights: p.Weights, optimizer: p.Weights) -> None:
        """Take G back from a party: its weights and Adam state after the party's steps."""
        self.module.load_state_dict(weights)
        load_adam_state(self.optimizer, optimizer)

    def step_against(self, discriminator: nn.Module, steps: int) -> float:
        """G steps against a discriminator the platform holds (server-d's server D); D's dropout draws
        from a seed of G's own checkpointed stream, so resumed runs repeat it exactly."""
        total = 0.0
        with seeded(draw_seed(self.rng), self.device):
            for _ in range(steps):
                latents = self.latents(self.train_config.batch_size).to(self.device)
                loss = generator_loss(discriminator(self.module(latents)))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach())
        return total / steps

    def sample(self, latents: torch.Tensor, module: nn.Module | None = None) -> torch.Tensor:
        """Images in [-1, 1] for given latents, in eval mode (batch norm uses running statistics)."""
        return images_from_latents(module or self.module, latents, self.device)

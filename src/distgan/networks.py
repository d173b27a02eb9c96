"""The run's networks as both sides build and handle them: seeded initial weights (every D of a run
starts from the same ones), the Adam optimizer and its travelling state, flat parameter vectors
(server-d's deltas index them) and detached CPU copies of weights for messages. Platform code uses these without importing
``party.py``, the trust boundary's module."""

from __future__ import annotations

import torch
from torch import nn

from distgan import protocol as p
from distgan.checkpoint import optimizer_from_tensors, optimizer_to_tensors, prefixed, unprefixed
from distgan.config import TrainConfig
from distgan.models import ModelFactory
from distgan.seeding import derive_seed, seeded


def build_discriminator(factory: ModelFactory, seed: int) -> nn.Module:
    """Every D of a run starts from the same weights (a shared seed), as federated training assumes."""
    with seeded(derive_seed(seed, "discriminator-init")):
        return factory.discriminator()


def build_generator(factory: ModelFactory, seed: int) -> nn.Module:
    with seeded(derive_seed(seed, "generator-init")):
        return factory.generator()


def adam(module: nn.Module, lr: float, train: TrainConfig) -> torch.optim.Adam:
    # The fused kernel updates every tensor in one pass: 1.0 ms per G + D step of the default model on
    # one CPU thread against 8.2 ms for the per-tensor loop (docs/TUNING.md round 3b), i.e. ~15 % of a
    # round. CPU support arrived in torch 2.4; elsewhere (older torch, other devices) the plain loop.
    parameters = list(module.parameters())
    return torch.optim.Adam(parameters, lr=lr, betas=(train.beta1, train.beta2), fused=_fusable(parameters) or None)


_FUSED_ADAM_DEVICES = ("cuda", "cpu") if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 4) else ("cuda",)


def _fusable(parameters: list[nn.Parameter]) -> bool:
    return bool(parameters) and all(p.device.type in _FUSED_ADAM_DEVICES and p.dtype.is_floating_point
                                    for p in parameters)


def flat_parameters(module: nn.Module) -> torch.Tensor:
    return torch.cat([parameter.detach().flatten() for parameter in module.parameters()])


def set_flat_parameters(module: nn.Module, indices: torch.Tensor, values: torch.Tensor) -> None:
    """Overwrite the parameters at ``indices`` of the flat parameter vector with ``values``."""
    flat = flat_parameters(module)
    flat[indices] = values.to(flat)
    offset = 0
    with torch.no_grad():
        for parameter in module.parameters():
            count = parameter.numel()
            parameter.copy_(flat[offset:offset + count].view_as(parameter))
            offset += count


def train_mode(module: nn.Module) -> None:
    """``module.train()`` unless it is in training mode already: the call walks every submodule, and the
    hot path asks for it on every step (distgan never sets a submodule apart from its network)."""
    if not module.training:
        module.train()


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def adam_state(optimizer: torch.optim.Optimizer) -> p.Weights:
    """The optimizer's per-parameter state as ``"<index>/<name>"`` CPU copies: what travels with G."""
    tensors, _ = optimizer_to_tensors(optimizer, "state")
    return {key: value.detach().cpu().clone() for key, value in unprefixed("state", tensors).items()}


def load_adam_state(optimizer: torch.optim.Optimizer, state: p.Weights) -> None:
    """Replace the optimizer's state with ``state`` (empty: a fresh one); its hyper-parameters stay.
    The tensors are copied, so sender and receiver never share a moment buffer."""
    meta = {"param_groups": optimizer.state_dict()["param_groups"], "plain": {}}
    copies = {key: value.clone() for key, value in state.items()}
    optimizer_from_tensors(optimizer, "state", prefixed("state", copies), meta)

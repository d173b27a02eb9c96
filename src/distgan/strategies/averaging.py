"""Weighted averaging of network weights, shared by the strategies that average models (fedgan).

Floating-point entries (weights, biases, batch-norm running mean and variance) are averaged with
the given weights; integer entries (batch norm's ``num_batches_tracked``, int64) have no meaningful
mean and are taken from the first state, as FedAvg implementations do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from distgan import protocol as p


def average_states(states: Sequence[p.Weights], weights: torch.Tensor) -> p.Weights:
    """``sum_j weights[j] * states[j]`` entry by entry (weights sum to 1); ints from ``states[0]``."""
    if not states:
        raise ValueError("average_states: no states to average")
    if weights.shape != (len(states),):
        raise ValueError(f"average_states: {len(states)} states but weights of shape {tuple(weights.shape)}")
    keys = set(states[0])
    for index, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"average_states: state {index} has entries {sorted(set(state) ^ keys)} "
                             "that state 0 does not (or the reverse)")
    averaged: p.Weights = {}
    for key, first in states[0].items():
        if not first.dtype.is_floating_point:
            averaged[key] = first.clone()
            continue
        stacked = torch.stack([state[key].double() for state in states])  # float64: one rounding, at the end
        share = weights.double().to(stacked.device).view(-1, *([1] * first.dim()))
        averaged[key] = (share * stacked).sum(dim=0).to(first.dtype)
    return averaged

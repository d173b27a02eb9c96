"""GAN losses by phase (stylegan2-ada's ``training/loss.py`` habit): one D phase, one G phase.

The paper trains with the non-saturating objective of Goodfellow et al.: D minimises
``BCE(D(x), 1) + BCE(D(G(z)), 0)``; G minimises ``BCE(D(G(z)), 1)``. With several discriminators
(Alg. 2) G minimises ``BCE(sum_j w_j D_j(G(z)), 1)``, the weighted average of their *probabilities*.
Discriminators hand us logits; everything is computed in log space so no sigmoid saturates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-log D(x) - log(1 - D(G(z)))``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``-mean_b log(sum_j w_j sigmoid(l_jb))`` for logits ``[J, B]`` and weights ``[J]`` summing to 1.

    With one discriminator this is the usual non-saturating loss ``softplus(-l)``.
    """
    if logits.dim() == 1 or logits.shape[0] == 1 and weights is None:
        # One discriminator: the same number as the mixture below (logsumexp of one term is that term,
        # log 1 = 0), in one op instead of six -- this is every G step of round-robin and centralized.
        return F.softplus(-logits).mean()
    if weights is None:
        weights = torch.full((logits.shape[0],), 1.0 / logits.shape[0], dtype=logits.dtype)
    log_probability = -F.softplus(-logits)  # log sigmoid(l)
    mixed = torch.logsumexp(log_probability + weights.to(logits).log().unsqueeze(1), dim=0)
    return -mixed.mean()


def mean_of_generator_losses(logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j w_j mean_b softplus(-l_jb)``: the weighted mean of each discriminator's *own*
    non-saturating G loss, for logits ``[J, B]``. Its gradient is the weighted mean of the per-party
    error feedback, MD-GAN's rule (Hardy et al. 2019), unlike :func:`generator_loss`, which
    averages the probabilities first (the paper's Alg. 2)."""
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)
    if weights is None:
        weights = torch.full((logits.shape[0],), 1.0 / logits.shape[0], dtype=logits.dtype)
    return (weights.to(logits) * F.softplus(-logits).mean(dim=1)).sum()


GeneratorLoss = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""A G loss of logits ``[J, B]`` and weights ``[J]``: :func:`generator_loss` or :func:`mean_of_generator_losses`."""


def _mean_probability_and_gradient(logits: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`generator_loss` and its gradient in closed form: with ``a_jb = log w_j + log sigmoid(l_jb)``,
    ``dL/dl_jb = -softmax_j(a_jb) * sigmoid(-l_jb) / B`` (log space, so nothing saturates)."""
    if logits.shape[0] == 1:  # one discriminator: the softmax is exactly 1 (the same numbers, fewer ops)
        return F.softplus(-logits).mean(), -torch.sigmoid(-logits) / logits.shape[1]
    mixed = -F.softplus(-logits) + weights.log().unsqueeze(1)
    total = torch.logsumexp(mixed, dim=0)
    share = torch.exp(mixed - total)  # w_j sigmoid(l_jb) / sum_k w_k sigmoid(l_kb)
    return -total.mean(), -share * torch.sigmoid(-logits) / logits.shape[1]


def _mean_of_losses_and_gradient(logits: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_of_generator_losses` and its gradient ``dL/dl_jb = -w_j sigmoid(-l_jb) / B``."""
    column = weights.unsqueeze(1)
    return (column * F.softplus(-logits)).sum() / logits.shape[1], -column * torch.sigmoid(-logits) / logits.shape[1]


LOGIT_GRADIENTS: dict[object, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    generator_loss: _mean_probability_and_gradient, mean_of_generator_losses: _mean_of_losses_and_gradient}
"""Closed-form (loss, dL/dlogits) of the G losses above: autograd on a [J, B] leaf cost more than a
whole G step of the paper's MLP spends outside its matrix products (benchmarks/throughput.py)."""


def generator_input_gradient(logits: torch.Tensor, input_gradients: torch.Tensor,
                             weights: torch.Tensor | None = None,
                             loss_of_logits: GeneratorLoss = generator_loss) -> tuple[float, torch.Tensor]:
    """Exact dL_G/dx from each discriminator's logits ``[J, B]`` and ``dl_j/dx`` ``[J, B, ...]``.

    By the chain rule ``dL/dx_b = sum_j (dL/dl_jb) (dl_jb/dx_b)``, exact whenever a discriminator
    scores each sample on its own (MLPs, DCGAN without batch norm). Returns the loss and ``[B, ...]``.
    ``loss_of_logits`` picks how the discriminators combine (default: the paper's mean probability);
    the two losses above have their gradient in closed form, any other goes through autograd.
    """
    closed_form = LOGIT_GRADIENTS.get(loss_of_logits)
    if closed_form is not None:
        logits = logits.detach()
        if weights is None:
            weights = torch.full((logits.shape[0],), 1.0 / logits.shape[0], dtype=logits.dtype)
        loss, upstream = closed_form(logits, weights.to(logits))
    else:
        leaf = logits.detach().clone().requires_grad_(True)
        loss = loss_of_logits(leaf, weights)
        (upstream,) = torch.autograd.grad(loss, leaf)
    shape = upstream.shape + (1,) * (input_gradients.dim() - upstream.dim())
    if upstream.shape[0] == 1:  # one discriminator: no sum over parties to form (and no copy)
        return float(loss.detach()), upstream[0].view(shape[1:]) * input_gradients[0]
    return float(loss.detach()), (upstream.view(shape) * input_gradients).sum(dim=0)

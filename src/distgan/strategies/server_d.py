"""server-d (the paper's Alg. 1): G trains against a server discriminator built from party deltas.

Each round every selected party, on the same generated batches,
  1. optionally overwrites a fraction theta_d (``strategy.download_fraction``) of D_j's flat weight
     vector with the server D's values (chosen by the coordinator, see below);
  2. trains D_j on real vs fake for ``local_steps`` steps;
  3. uploads a fraction theta_u (``strategy.upload_fraction``) of D_j's weight change over the
     request: the entries of largest magnitude or a random subset (``strategy.selection``; Shokri &
     Shmatikov 2015's two rules; the party selects, see ``Party._train_and_upload``).
The server adds the uploads to its D entry by entry (``strategy.server_update``): ``max`` takes, per
entry, the delta of largest magnitude among the parties that uploaded it (the paper's "server
selects the biggest delta w_i"), ``mean`` their mean, ``sum`` their sum (Shokri & Shmatikov 2015's
server, which adds every uploaded delta to the global parameters). G then takes ``local_steps`` steps against the
server D (Alg. 1 lines 7-10). The server D starts from the same weights as every D_j.

With ``strategy.fakes=party`` the platform sends G's weights instead of the batches and each party
generates its ``local_steps`` batches itself (latents from its own seeded stream; every party its
own, where the batch variant gives all parties the same): the same work per party (D steps, upload)
in a message whose size depends on G, not on ``local_steps``. What the party learns that it did not
before: G's weights (it already saw G's samples).

Download rule (the paper has none; Shokri & Shmatikov let participants fetch the parameters that
were updated most): the coordinator sends party j the theta_d entries of the server D that moved
most since the server last sent them to j. It is deterministic (so a resumed run repeats it
exactly), needs no data from the party, and spends the download on the entries where the server
learned most from the *other* parties; a random choice would often resend entries that have not
moved. The per-party record of what was last sent is checkpointed with the server D.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch

from distgan import protocol as p
from distgan.checkpoint import prefixed, unprefixed
from distgan.config import Config
from distgan.networks import build_discriminator, cpu_state_dict, flat_parameters, set_flat_parameters
from distgan.parties import Parties
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext, only

Upload = tuple[torch.Tensor, torch.Tensor]
"""One party's upload: int64 indices into the flat D parameter vector and float32 deltas there."""
ServerUpdate = Callable[[Sequence[Upload], int], Upload]


def biggest_delta(uploads: Sequence[Upload], size: int) -> Upload:
    """Per entry, the uploaded delta of largest magnitude (sign kept); ties go to the earlier upload."""
    best = torch.zeros(size)
    seen = torch.zeros(size, dtype=torch.bool)
    for indices, values in uploads:
        take = ~seen[indices] | (values.abs() > best[indices].abs())
        best[indices[take]] = values[take]
        seen[indices] = True
    touched = seen.nonzero().squeeze(1)
    return touched, best[touched]


def mean_delta(uploads: Sequence[Upload], size: int) -> Upload:
    """Per entry, the mean of the deltas of the parties that uploaded it."""
    total = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.float64)
    for indices, values in uploads:
        total.index_add_(0, indices, values.double())
        count.index_add_(0, indices, torch.ones(len(indices), dtype=torch.float64))
    touched = count.nonzero().squeeze(1)
    return touched, (total[touched] / count[touched]).float()


def summed_delta(uploads: Sequence[Upload], size: int) -> Upload:
    """Per entry, the sum of the uploaded deltas: Shokri & Shmatikov's server adds every upload."""
    total = torch.zeros(size, dtype=torch.float64)
    seen = torch.zeros(size, dtype=torch.bool)
    for indices, values in uploads:
        total.index_add_(0, indices, values.double())
        seen[indices] = True
    touched = seen.nonzero().squeeze(1)
    return touched, total[touched].float()


SERVER_UPDATES: dict[str, ServerUpdate] = {"max": biggest_delta, "mean": mean_delta, "sum": summed_delta}
"""``strategy.server_update`` -> rule combining the uploads into one delta for the server D."""


def checked_upload(party: int, reply: p.DeltaUpload, size: int) -> Upload:
    """The upload's indices must name distinct entries of the D vector; anything else is refused."""
    indices = reply.indices
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
        raise p.ProtocolError(f"party {party}: {reply.kind}.indices outside [0, {size}) of the D parameters")
    if len(indices.unique()) != len(indices):
        raise p.ProtocolError(f"party {party}: {reply.kind}.indices repeat an entry")
    return indices, reply.values


class DownloadSchedule:
    """Which server-D entries each party downloads: the ``fraction`` that moved most since last sent."""

    def __init__(self, initial: torch.Tensor, parties: Sequence[int], fraction: float) -> None:
        self.fraction = fraction
        self.last_sent = {j: initial.detach().cpu().clone() for j in parties}

    def choose(self, party: int, server: torch.Tensor) -> Upload:
        """(indices, values) of the server D to send ``party`` now; recorded as sent."""
        server = server.detach().cpu()
        sent = self.last_sent[party]
        count = max(1, math.ceil(self.fraction * server.numel()))
        if count >= server.numel():  # everything (the default): the same set, without sorting 500k entries
            indices = torch.arange(server.numel())
        else:
            indices = (server - sent).abs().topk(count).indices.sort().values
        sent[indices] = server[indices]
        return indices, server[indices].float()


@STRATEGIES.register("server-d", "Alg. 1: parties upload D-weight deltas to a server D; G trains against it")
class ServerDiscriminator(Strategy):
    name = "server-d"

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.GenerateAndUpload,) if config.strategy.fakes == "party" else (p.TrainAndUpload,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps  # G steps against the server D

    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        self.server_d = build_discriminator(context.factory, self.config.runtime.seed).to(self.trainer.device)
        # Moved only by uploads: G's backward pass needs gradients through D, not of D's weights.
        self.server_d.requires_grad_(False)
        self.size = flat_parameters(self.server_d).numel()
        fraction = self.config.strategy.download_fraction
        self.downloads = None if fraction is None else \
            DownloadSchedule(flat_parameters(self.server_d), sorted(context.party_sizes), fraction)

    def _request(self, party: int, fakes: torch.Tensor | None, generator: p.Weights | None = None) -> p.Message:
        """The party's request: the fakes to train on, or (``strategy.fakes=party``) G's weights to make them."""
        strategy = self.config.strategy
        indices = values = None
        if self.downloads is not None:
            indices, values = self.downloads.choose(party, flat_parameters(self.server_d))
        if generator is not None:
            return p.GenerateAndUpload(self.local_steps, upload_fraction=strategy.upload_fraction,
                                       selection=strategy.selection, generator=generator,
                                       download_indices=indices, download_values=values)
        assert fakes is not None
        return p.TrainAndUpload(fakes, upload_fraction=strategy.upload_fraction, selection=strategy.selection,
                                download_indices=indices, download_values=values)

    def apply_uploads(self, uploads: Sequence[Upload]) -> int:
        """Add the combined uploads to the server D; returns how many entries moved."""
        indices, delta = SERVER_UPDATES[self.config.strategy.server_update](uploads, self.size)
        flat = flat_parameters(self.server_d)
        indices = indices.to(flat.device)
        set_flat_parameters(self.server_d, indices, flat[indices] + delta.to(flat))
        return len(indices)

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        if self.config.strategy.fakes == "party":
            generator = cpu_state_dict(self.trainer.module)
            requests = {j: self._request(j, None, generator) for j in selected}
        else:
            batches = self.trainer.fakes(self.local_steps)
            batches.first_graph = None  # G's steps below draw fresh latents against the server D
            requests = {j: self._request(j, batches.images) for j in selected}
        replies = only(parties.request(requests), p.DeltaUpload)
        if not replies:
            return RoundResult(0.0, {})
        answered = sorted(replies)
        uploads = [checked_upload(j, cast(p.DeltaUpload, replies[j]), self.size) for j in answered]
        moved = self.apply_uploads(uploads)
        g_loss = self.trainer.step_against(self.server_d, self.local_steps)
        return RoundResult(g_loss, {j: cast(p.DeltaUpload, replies[j]).stats for j in answered},
                           {"server_d_moved_fraction": moved / self.size})

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = prefixed("server_d", self.server_d.state_dict())
        if self.downloads is not None:
            tensors.update({f"last_sent/{j}": sent for j, sent in self.downloads.last_sent.items()})
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.server_d.load_state_dict(unprefixed("server_d", tensors))
        if self.downloads is not None:
            for key, sent in unprefixed("last_sent", tensors).items():
                self.downloads.last_sent[int(key)] = sent.clone()

"""The two ways a party is made differentially private, and the filter every reply passes.

Threat model (docs/PRIVACY.md has the long form). The adversary is everyone outside the party:
the coordinator, the other parties, anyone who sees the messages or the final generator, all of
them colluding and knowing the code and the run's config (its seed included). What is protected is
each record of the party's share: add or remove one record and the distribution of *everything the
party sends* changes by at most (epsilon, delta) -- its counts too: ``Description`` carries them
noised (:func:`published_counts`), spent once in the ledger. Not protected: the party's own storage
(its checkpoints and journal; it is the data holder's disk). Every answer goes through
:meth:`PartyPrivacy.answer`: the journal (:mod:`distgan.privacy.journal`, an append-only ledger no
load rewinds, and the replies released, so a repeated request never gets new noise), the release
filter, and the error filter. No checkpoint holds a random stream: loads reseed from OS entropy.

**dp-sgd** (``auto`` picks it for every strategy; Xie et al. 2018's DP-GAN, Bie et al. 2023):
each D step clips the per-sample gradients of the *real* half of the D loss to ``max_grad_norm``
and adds Gaussian noise (Opacus's ghost clipping hooks + ``DPOptimizerFastGradientClipping``), with real batches drawn
by Poisson sampling at rate q = batch / n. The fake half uses no private data (the fakes come from
G, itself a function of earlier private releases), so its gradient is added exactly, unclipped:
only per-sample gradients of real samples bound the sensitivity (GS-WGAN's selective-barrier
argument applied to D; the fake half is clipped per sample as well, without noise, so that both
halves keep one scale). D is then DP, and everything a party computes from D -- weights, deltas,
feedback on generated images, its own G in fedgan / local-only -- is post-processing. Accounted as
one sampled Gaussian step per D step.

**gradient-sanitizer** (GS-WGAN, Chen et al. 2020; opt-in, feedback-only strategies): D trains
without noise and only what leaves is sanitized: the gradient of the party's own generator loss
with respect to each generated image is clipped to ``max_grad_norm`` and Gaussian noise of standard
deviation ``2 * noise_multiplier * max_grad_norm`` is added (sensitivity 2C: a clipped vector can
turn into any other of the ball). Because D has seen every record, one record may change all B
released gradients of a query: each query is B Gaussian releases with *no* subsampling
amplification (GS-WGAN's Theorem 1 gives 2B*lambda/sigma^2 RDP per step and amplifies only by
choosing one of many discriminators trained on disjoint subsets; a party here has one D). The
sampling rate batch/n would overstate privacy, so it is not used. The logits are not released.

Either way the noise and the Poisson sampling draw from a seed secret to the party (OS entropy,
kept in its own checkpoints): noise seeded from the run's public seed could be regenerated and
subtracted by the coordinator. Statistics of real batches (``d_loss``, ``d_real``) are withheld
(reported as 0); ``d_fake`` is reported under DP-SGD only (a function of the private D).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleHooksFastGradientClipping
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn

from distgan import protocol as p
from distgan.config import Config
from distgan.data.sources import LabelledImages
from distgan.images import to_unit_range
from distgan.privacy.accounting import (
    PlanError,
    PrivacyBudgetExhausted,
    PrivacyLedger,
    PrivacyPlan,
    make_plan,
)
from distgan.privacy.journal import PrivacyJournal, parse_request_id, request_digest
from distgan.registry import Registry

log = logging.getLogger("distgan")

COUNTS_REQUEST = "describe"
"""The journal id of a party's one release of its noisy counts (kept for every later run of the dataset)."""


class PrivacyViolation(p.ProtocolError):
    """A party under DP was asked to release something its mechanism does not cover."""


class RepeatRefused(p.ProtocolError):
    """A repeat of an answered request that the party cannot answer with its first reply."""


class WithheldError(RuntimeError):
    """A private party's failure, its text withheld: it may depend on private data."""


class PartyPrivacy(ABC):
    """A private party's engine: (for DP-SGD) its D phase, and the filter on every reply it sends."""

    name: ClassVar[str]
    private_discriminator: ClassVar[bool]
    """True when the engine runs the party's D steps itself (DP-SGD)."""

    def __init__(self, plan: PrivacyPlan, party_id: int, secret_seed: int | None = None,
                 journal: PrivacyJournal | None = None, description: p.Description | None = None,
                 secure_mode: bool = False) -> None:
        """``journal``: the party's ledger file and kept replies (in memory when None); ``description``:
        the noisy counts it published (:func:`published_counts`); ``secret_seed`` fixes the first noise
        stream (tests only: every load draws fresh OS entropy)."""
        self.plan = plan
        self.owner = f"party {party_id}"
        self.journal = journal if journal is not None else PrivacyJournal(None, self.owner)
        self.ledger = PrivacyLedger(plan, self.owner, self.journal.history if journal is not None else None)
        self.description = description
        self.secure_mode = secure_mode
        self._session = ""
        """The session of the newest identified request: its kept replies are the ones worth keeping."""
        # Secret to the party: the coordinator knows the run seed, so noise must not derive from it.
        self._device = torch.device("cpu")
        self._noise_rng = self._secret_generator(secret_seed)

    def _secret_generator(self, seed: int | None = None) -> torch.Generator:
        """A generator no one outside the party can predict: OS entropy (or, in secure mode, a CSPRNG)."""
        if self.secure_mode:
            import torchcsprng  # type: ignore[import-not-found]  # privacy.secure_mode checked it is installed

            return torchcsprng.create_random_device_generator("/dev/urandom")  # type: ignore[no-any-return]
        generator = torch.Generator(device=self._device)
        return generator.manual_seed(secrets.randbits(63) if seed is None else seed)

    def reseed(self) -> None:
        """Fresh OS entropy for every secret stream (after any load: a restored stream would repeat noise)."""
        if not self.secure_mode:
            self._noise_rng.manual_seed(secrets.randbits(63))

    @staticmethod
    def dropout_seed() -> int:
        """Seed of the dropout masks of one request: secret, so the coordinator cannot predict them."""
        return secrets.randbits(62)

    def attach(self, discriminator: nn.Module, optimizer: torch.optim.Optimizer, data: LabelledImages,
               device: torch.device) -> None:
        """Bind to the party's D, its optimizer and its share (called once, by the Party)."""
        self._discriminator, self._optimizer, self._data, self._device = discriminator, optimizer, data, device
        if self._noise_rng.device != device:
            self._noise_rng = self._secret_generator()

    # -- answering a request: the journal, the release filter, the error filter ----------------------------
    def answer(self, request: p.Message, compute: Callable[[], p.Message]) -> p.Message:
        """Answer ``request`` by ``compute()`` through the release filter, with every spend journaled
        before the reply leaves; a repeat of an identified request gets the first reply (or is refused),
        never new noise; an error's text is withheld unless it is about public things."""
        request_id = str(getattr(request, "request_id", ""))
        digest = request_digest(request) if request_id else ""
        if request_id:
            known = self.journal.answered(request_id)
            if known is not None:
                return self._repeat(request, request_id, known.digest, digest)
            parsed = parse_request_id(request_id)
            if parsed is not None:
                self._session = parsed[0]
        try:
            reply = self.release(compute())
        except Exception as error:
            # Noise drawn counts even without a reply; nothing left, so a retry of the id may be answered.
            self._journal(request, "", digest, failed_request=request_id)
            if isinstance(error, (p.ProtocolError, PrivacyBudgetExhausted)):
                raise  # about the request or the budget: public
            log.error("%s: %s failed: %s: %s (withheld from the coordinator under differential privacy)",
                      self.owner, request.kind, type(error).__name__, error)
            raise WithheldError(f"{self.owner}: {type(error).__name__} while answering {request.kind} (details "
                                "withheld under differential privacy, as they may depend on private data; the "
                                "party's own log has them)") from None
        self._journal(request, request_id, digest)
        if request_id:
            self.journal.keep_reply(request_id, reply)
        return reply

    def _repeat(self, request: p.Message, request_id: str, answered_digest: str, digest: str) -> p.Message:
        if answered_digest != digest:
            raise RepeatRefused(f"{self.owner}: request {request_id} ({request.kind}) was answered before with other "
                                "content; a repeated request gets its first reply, so it must repeat the request")
        cached = self.journal.cached_reply(request_id)
        if cached is None:
            raise RepeatRefused(f"{self.owner}: request {request_id} ({request.kind}) was answered before and its "
                                "reply is no longer kept (older than the party's oldest checkpoint); answering "
                                "again would draw new noise")
        return cached

    def _journal(self, request: p.Message, request_id: str, digest: str, **extra: str) -> None:
        spent = self.ledger.take_unrecorded()
        if spent or request_id:
            self.journal.record(request_id, request.kind, digest, spent, **extra)

    def prune_replies(self, oldest_kept_round: int) -> None:
        """The party keeps checkpoints from ``oldest_kept_round`` on: replies before it are never repeated."""
        self.journal.prune_replies(self._session, oldest_kept_round)

    def discriminator_steps(self, fakes: torch.Tensor) -> p.DiscriminatorStats:
        raise NotImplementedError(f"{self.name} does not run the D phase")

    # -- the release filter: every reply of the party passes here ------------------------------------
    def release(self, reply: p.Message) -> p.Message:
        """What may leave the party, by what the reply states it reveals (``protocol.REVEALS``);
        anything else is refused, never passed through. A ``Description`` leaves with the noisy counts
        the party published (:func:`published_counts`), never its exact ones."""
        reveals = getattr(type(reply), "reveals", None) if reply.direction == "up" else None
        if isinstance(reply, p.Description):
            if self.description is None:
                raise PrivacyViolation(f"{self.owner}: its exact counts are withheld under differential privacy, "
                                       "and it has published no noisy ones")
            return dataclasses.replace(reply, samples=self.description.samples,
                                       label_counts=self.description.label_counts.clone())
        if reveals == "public":
            return reply  # nothing about the data
        if reveals == "stats":
            return self._stats(reply)  # type: ignore[arg-type]
        if reveals == "feedback":
            return self._feedback(reply)  # type: ignore[arg-type]
        if reveals == "weights":
            return self._weights(reply)  # type: ignore[arg-type]
        if reveals == "embedding":
            return self._embedding(reply)  # type: ignore[arg-type]
        raise PrivacyViolation(f"{self.owner}: {reply.kind} is not a reply the {self.name} mechanism covers; "
                               "it is withheld under differential privacy")

    def _stats(self, stats: p.DiscriminatorStats) -> p.DiscriminatorStats:
        keep_fake = self.private_discriminator  # D(G(z)) is post-processing only when D itself is DP
        return dataclasses.replace(stats, d_loss=0.0, d_real=0.0, d_fake=stats.d_fake if keep_fake else 0.0,
                                   epsilon=self.ledger.epsilon)

    @abstractmethod
    def _feedback(self, reply: p.Feedback) -> p.Feedback: ...

    @abstractmethod
    def _weights(self, reply: p.DeltaUpload | p.WeightsReply | p.GeneratorReply) -> p.Message: ...

    def _embedding(self, reply: p.EmbeddingRelease) -> p.Message:
        raise PrivacyViolation(f"{self.owner}: the {self.name} mechanism does not cover {reply.kind}, an exact "
                               "statistic of the party's data; use strategy dp-merf with privacy.mechanism=auto")

    def cached_release(self, request: p.ReleaseEmbedding) -> p.EmbeddingRelease | None:
        """The reply already released for this request, if any (only release-once mechanisms keep one)."""
        return None

    # -- checkpoints (the party's own storage) ------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """No ledger (it lives in the journal, which no load rewinds) and no random state (a restored
        stream would replay noise already released): only the mechanism's name, to refuse a mix-up."""
        return {}, {"mechanism": self.name}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta.get("mechanism") != self.name:
            raise ValueError(f"{self.owner}: checkpoint was made with privacy mechanism {meta.get('mechanism')!r}, "
                             f"this run uses {self.name!r}")
        if "ledger" in meta and not self.journal.entries:  # a checkpoint of a version that kept the ledger there
            history = [(float(sigma), float(rate), int(count)) for sigma, rate, count in meta["ledger"]["history"]]
            self.journal.record("", "migrated-ledger", "", history)
            self.ledger.accountant.history = self.journal.history
            self.ledger.take_unrecorded()
        self.reseed()


def published_counts(journal: PrivacyJournal, data: LabelledImages, num_labels: int,
                     noise: float) -> tuple[p.Description, bool]:
    """The counts a private party publishes: its label histogram (labelled data; records without a
    label are not counted) or its record count (unlabelled data), plus N(0, noise^2) per entry, rounded
    and clipped at 0; ``samples`` is their sum. One record changes one entry by 1: sensitivity 1 under
    add/remove-one, the relation the whole accounting uses. Drawn once per dataset with OS entropy;
    every later call, in any later run, returns the journaled one. The flag says whether this call
    drew them: then nothing derived from them may leave until :func:`journal_counts` has spent them."""
    entry = journal.answered(COUNTS_REQUEST)
    if entry is not None:
        return p.Description(samples=int(entry.extra["samples"]),
                             label_counts=torch.tensor(entry.extra["label_counts"], dtype=torch.int64)), False
    labels = data.labels
    exact = torch.bincount(labels[labels >= 0], minlength=num_labels)[:num_labels] if num_labels \
        else torch.tensor([len(labels)])
    generator = torch.Generator().manual_seed(secrets.randbits(63))
    noisy = (exact.double() + noise * torch.randn(exact.shape, generator=generator, dtype=torch.float64))
    noisy = noisy.round().clamp(min=0).long()
    return p.Description(samples=max(1, int(noisy.sum())),
                         label_counts=noisy if num_labels else torch.zeros(0, dtype=torch.int64)), True


def journal_counts(journal: PrivacyJournal, counts: p.Description, noise: float) -> None:
    """Spend the release of freshly drawn counts (one Gaussian at ``noise``, sensitivity 1)."""
    journal.record(COUNTS_REQUEST, p.Description.kind, "", [(noise, 1.0, 1)], samples=counts.samples,
                   label_counts=counts.label_counts.tolist())


MECHANISMS: Registry[type[PartyPrivacy]] = Registry("privacy mechanism")


@MECHANISMS.register("dp-sgd", "DP-SGD on each party's discriminator (Opacus); every release is post-processing")
class DPSGDDiscriminator(PartyPrivacy):
    name = "dp-sgd"
    private_discriminator = True

    def attach(self, discriminator: nn.Module, optimizer: torch.optim.Optimizer, data: LabelledImages,
               device: torch.device) -> None:
        super().attach(discriminator, optimizer, data, device)
        errors = ModuleValidator.validate(discriminator, strict=False)
        if errors:
            raise ValueError(f"{self.owner}: DP-SGD cannot compute per-sample gradients of this discriminator "
                             f"({'; '.join(str(e) for e in errors)}); for dcgan use --set model.norm=group or none")
        # Opacus's ghost clipping (Li et al. 2022): per-sample gradient *norms* without per-sample
        # gradients (a Linear(784, 512) D would otherwise build a [B, 512, 784] tensor every step).
        # Hooks on the party's own D (no wrapper: its state_dict and every other use stay as they
        # are), enabled only for the norm-recording backward passes of each D step.
        self._hooks = GradSampleHooksFastGradientClipping(discriminator, loss_reduction="sum",
                                                          max_grad_norm=self.plan.max_grad_norm,
                                                          use_ghost_clipping=True)
        self._hooks.disable_hooks()
        self._params = [param for param in discriminator.parameters() if param.requires_grad]
        self._dp_optimizer = DPOptimizerFastGradientClipping(
            optimizer, noise_multiplier=self.plan.noise_multiplier, max_grad_norm=self.plan.max_grad_norm,
            expected_batch_size=self._expected_batch(), loss_reduction="mean", generator=self._noise_rng,
            secure_mode=self.secure_mode)
        self._dp_optimizer.attach_step_hook(self.ledger.accountant.get_optimizer_hook_fn(self.plan.sample_rate))
        self._sampling_rng = self._secret_generator_on_cpu()

    def _secret_generator_on_cpu(self) -> torch.Generator:
        device, self._device = self._device, torch.device("cpu")
        try:
            return self._secret_generator()
        finally:
            self._device = device

    def reseed(self) -> None:
        super().reseed()
        if not self.secure_mode and hasattr(self, "_sampling_rng"):
            self._sampling_rng.manual_seed(secrets.randbits(63))

    def _expected_batch(self) -> int:
        """q times the *published* count (public), never the exact one (which would scale the release)."""
        return self.plan.expected_batch or max(1, round(self.plan.sample_rate * len(self._data)))

    def _poisson_batch(self) -> torch.Tensor:
        """Each record joins with probability q, independently: the sampling RDP amplification assumes."""
        chosen = torch.rand(len(self._data), generator=self._sampling_rng) < self.plan.sample_rate
        index = chosen.nonzero().squeeze(1)
        return to_unit_range(self._data.images[index]).to(self._device)

    def discriminator_steps(self, fakes: torch.Tensor) -> p.DiscriminatorStats:
        self.ledger.check(len(fakes))
        self._discriminator.train()
        d_fake = 0.0
        for fake in fakes.to(self._device):
            self._dp_optimizer.zero_grad(set_to_none=True)
            # Fake half: no private data, so no noise; clipped per sample like the real half only so
            # that both halves of the D loss keep the same scale (C bounds one, not the other, else).
            fake_logits, fake_gradient = self._clipped_sum(fake, sign=1.0)
            # Real half: the sum of per-sample gradients each clipped to C; then Opacus adds
            # N(0, sigma^2 C^2), divides by the expected batch, and its hook steps the accountant.
            real = self._poisson_batch()
            if len(real):
                self._clipped_sum(real, sign=-1.0)
            else:  # an empty Poisson draw still takes its (noise-only) step
                for param in self._params:
                    param.grad = torch.zeros_like(param)
            self._dp_optimizer.pre_step()
            for param, gradient in zip(self._params, fake_gradient):
                assert param.grad is not None
                param.grad.add_(gradient, alpha=1.0 / len(fake))
            self._dp_optimizer.original_optimizer.step()
            d_fake += float(torch.sigmoid(fake_logits).mean())
        self._dp_optimizer.zero_grad(set_to_none=True)
        return p.DiscriminatorStats(d_fake=d_fake / len(fakes), steps=len(fakes), epsilon=self.ledger.epsilon)

    def _clipped_sum(self, images: torch.Tensor, sign: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``sum_b clip_C(grad softplus(sign * D(x_b)))`` by Opacus's ghost clipping: one backward
        pass records each sample's gradient norm, a second one the loss reweighted by the clipping
        factors. Leaves the sum in ``param.grad`` and returns it with the logits."""
        with warnings.catch_warnings():  # torch notes the images need no gradient: right
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for param in self._params:
                param.grad = None
            self._hooks.enable_hooks()
            try:
                logits = self._discriminator(images)
                losses = F.softplus(sign * logits)
                losses.sum().backward(retain_graph=True)
                factors = self._hooks.get_clipping_coef()
            finally:
                self._hooks.disable_hooks()
            for param in self._params:
                param.grad = None
            (factors.detach() * losses).sum().backward()
        return logits.detach(), [torch.zeros_like(param) if param.grad is None else param.grad.clone()
                                 for param in self._params]

    def _feedback(self, reply: p.Feedback) -> p.Feedback:
        return dataclasses.replace(reply, stats=self._stats(reply.stats))  # post-processing of a DP D

    def _weights(self, reply: p.DeltaUpload | p.WeightsReply | p.GeneratorReply) -> p.Message:
        return dataclasses.replace(reply, stats=self._stats(reply.stats))  # post-processing of a DP D


@MECHANISMS.register("gradient-sanitizer", "GS-WGAN: D trains freely; each released gradient on a generated "
                                           "image is clipped and noised (feedback-only strategies)")
class GradientSanitizer(PartyPrivacy):
    name = "gradient-sanitizer"
    private_discriminator = False

    def sanitize(self, logits: torch.Tensor, logit_gradients: torch.Tensor) -> torch.Tensor:
        """``clip_C(d softplus(-l_b) / d x_b) + N(0, (2 sigma C)^2)`` per generated image ``[S, B, ...]``."""
        clip = self.plan.max_grad_norm
        own_loss_gradient = -torch.sigmoid(-logits).view(*logits.shape, *[1] * (logit_gradients.dim() - 2)) \
            * logit_gradients
        norms = own_loss_gradient.flatten(2).norm(dim=2)
        factor = (clip / (norms + 1e-6)).clamp(max=1.0)
        clipped = own_loss_gradient * factor.view(*factor.shape, *[1] * (logit_gradients.dim() - 2))
        noise = torch.normal(0.0, 2.0 * self.plan.noise_multiplier * clip, clipped.shape,
                             generator=self._noise_rng, device=self._noise_rng.device).to(clipped)
        return clipped + noise

    def _feedback(self, reply: p.Feedback) -> p.Feedback:
        steps = int(reply.logits.shape[0])
        self.ledger.check(steps)
        sanitized = self.sanitize(reply.logits.to(self._device), reply.input_gradients.to(self._device)).cpu()
        self.ledger.spend(steps)
        # Encoding in the existing Feedback message: with all logits 0, the platform's chain rule
        # (either G loss, avg-output's or md-gan's) weights party j's d logit/dx by -w_j / (2B), so
        # sending -2 * g gives G exactly sum_j w_j g_jb / B: the mean of the parties' sanitized
        # gradients of their own losses. The logits themselves are never released.
        return dataclasses.replace(reply, stats=self._stats(reply.stats), logits=torch.zeros_like(reply.logits),
                                   input_gradients=(-2.0 * sanitized).float())

    def _weights(self, reply: p.DeltaUpload | p.WeightsReply | p.GeneratorReply) -> p.Message:
        raise PrivacyViolation(f"{self.owner}: the gradient-sanitizer mechanism leaves D without noise, so D's "
                               f"weights ({reply.kind}) must not leave the party; use privacy.mechanism=dp-sgd")


@MECHANISMS.register("mean-embedding", "dp-merf: one Gaussian release of the party's label-conditional "
                                       "random-feature embedding, cached; nothing else leaves the party")
class MeanEmbeddingRelease(PartyPrivacy):
    """The Gaussian mechanism, once: ``E + N(0, (sigma * Delta)^2 I)`` for the party's summed embedding E
    (:mod:`distgan.privacy.random_features`; Delta = 1 under add/remove-one: every record adds one
    unit-norm vector). The release is cached and kept in the party's state (checkpoints, Flower's node
    state), so a repeated request gets the identical reply and the ledger does not move; a request
    for a different feature map is a new release, checked against the budget like any other. Every
    other reply of the party is refused: its D is never trained, and nothing else may leave."""

    name = "mean-embedding"
    private_discriminator = False
    relation = "add-remove"
    """The neighbouring relation the noise is calibrated for (the embedding carries its own noisy
    label counts, so nothing exact about the data set's size is released with it)."""

    def __init__(self, plan: PrivacyPlan, party_id: int, secret_seed: int | None = None, **engine: Any) -> None:
        super().__init__(plan, party_id, secret_seed, **engine)
        self._releases: dict[str, p.EmbeddingRelease] = {}

    @staticmethod
    def _key(feature_seed: int, features: int, lengthscale: float, num_labels: int, extra: str) -> str:
        # A single-kernel key keeps its old four-field form, so a party state saved before several
        # kernels existed still answers from its cache.
        return f"{feature_seed}:{features}:{lengthscale!r}:{num_labels}" + (f":{extra}" if extra else "")

    def _key_of(self, message: p.ReleaseEmbedding | p.EmbeddingRelease) -> str:
        labels = message.num_labels if isinstance(message, p.ReleaseEmbedding) else int(message.embedding.shape[1])
        return self._key(message.feature_seed, message.features, message.lengthscale, labels,
                         message.extra_lengthscales)

    def cached_release(self, request: p.ReleaseEmbedding) -> p.EmbeddingRelease | None:
        return self._releases.get(self._key_of(request))

    def _embedding(self, reply: p.EmbeddingRelease) -> p.Message:
        key = self._key_of(reply)
        cached = self._releases.get(key)
        if cached is not None:
            return cached  # a repeat: the same noisy numbers, no new spending
        self.ledger.check(1)
        from distgan.privacy.random_features import sensitivity

        scale = self.plan.noise_multiplier * sensitivity(self.relation)
        exact = reply.embedding.double()
        noise = torch.normal(0.0, scale, exact.shape, generator=self._noise_rng, dtype=torch.float64,
                             device=self._noise_rng.device).cpu()
        self.ledger.spend(1)
        release = dataclasses.replace(reply, embedding=(exact + noise).float(), epsilon=self.ledger.epsilon)
        self._releases[key] = release
        return release

    def _feedback(self, reply: p.Feedback) -> p.Feedback:
        raise PrivacyViolation(f"{self.owner}: the mean-embedding mechanism releases one noisy embedding and "
                               f"nothing else; {reply.kind} is withheld")

    def _weights(self, reply: p.DeltaUpload | p.WeightsReply | p.GeneratorReply) -> p.Message:
        raise PrivacyViolation(f"{self.owner}: the mean-embedding mechanism releases one noisy embedding and "
                               f"nothing else; {reply.kind} is withheld")

    def _stats(self, stats: p.DiscriminatorStats) -> p.DiscriminatorStats:
        raise PrivacyViolation(f"{self.owner}: the mean-embedding mechanism releases one noisy embedding and "
                               f"nothing else; {stats.kind} is withheld")

    # -- the cache is part of the party's state: a restarted party answers from it ----------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state()
        keys = sorted(self._releases)
        for index, key in enumerate(keys):
            tensors[f"release-{index}"] = self._releases[key].embedding
        meta["releases"] = [{"key": key, "epsilon": self._releases[key].epsilon} for key in keys]
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state(tensors, meta)
        for index, entry in enumerate(meta.get("releases", [])):
            key = str(entry["key"])
            if key in self._releases:
                continue  # a load never replaces (or forgets) what was already released
            seed, features, lengthscale, _, *extra = key.split(":")
            self._releases[key] = p.EmbeddingRelease(tensors[f"release-{index}"].float(), int(seed), int(features),
                                                     float(lengthscale), float(entry["epsilon"]),
                                                     extra_lengthscales=":".join(extra))


def resolve_mechanism(config: Config) -> str:
    """``auto`` -> dp-sgd, or mean-embedding for a strategy whose parties release an embedding once
    (dp-merf); the sanitizer only where a party releases nothing from D but feedback (the strategy class
    says so: :meth:`Strategy.feedback_only`)."""
    from distgan.strategies import STRATEGIES

    mechanism = config.privacy.mechanism
    release_once = STRATEGIES.get(config.strategy.name).releases_once(config)
    if mechanism == "auto":
        return "mean-embedding" if release_once else "dp-sgd"
    if release_once != (mechanism == "mean-embedding"):
        raise ValueError(f"privacy.mechanism={mechanism!r} does not cover strategy {config.strategy.name!r}: "
                         "mean-embedding is the mechanism of the strategies whose parties release an embedding "
                         "once (dp-merf), and of nothing else. Use privacy.mechanism=auto")
    if mechanism == "gradient-sanitizer" and not STRATEGIES.get(config.strategy.name).feedback_only(config):
        suited = [name for name in STRATEGIES.names() if STRATEGIES.get(name).feedback_only()]
        raise ValueError(f"privacy.mechanism='gradient-sanitizer' does not cover strategy {config.strategy.name!r}, "
                         f"whose parties send weights (D's, or G's trained against D); it suits {', '.join(suited)} "
                         "(per batch). "
                         "Use privacy.mechanism=dp-sgd (or auto)")
    return mechanism


def build_party_privacy(config: Config, party_id: int, data: LabelledImages, num_labels: int,
                        journal_folder: Path | None = None, secret_seed: int | None = None) -> PartyPrivacy | None:
    """The engine of one party from ``config.privacy`` (None when DP is off): its journal (ledger file
    and kept replies) in ``journal_folder``, its published noisy counts, and the plan made from them."""
    if not config.privacy.enabled:
        return None
    mechanism = resolve_mechanism(config)
    journal = PrivacyJournal(journal_folder, f"party {party_id}")
    noise = config.privacy.count_noise
    description, drawn = published_counts(journal, data, num_labels, noise)
    try:
        plan = make_plan(config, mechanism, description.samples)
    except PlanError as error:
        if drawn:  # counts never published: forget them, and say nothing that depends on them
            raise ValueError(error.public) from None
        raise
    if drawn:
        journal_counts(journal, description, noise)
    return MECHANISMS.get(mechanism)(plan, party_id, secret_seed, journal=journal, description=description,
                                     secure_mode=config.privacy.secure_mode)

"""A Party: one data holder. The only code in distgan that reads real samples.

A party owns its local data, its discriminator D_j and D_j's optimizer (and, for fedgan and
local-only, a generator of its own). It answers the requests of :mod:`distgan.protocol` and
nothing else; its replies carry statistics, scores, gradients with respect to *generated* images,
and weights, never a sample.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from distgan import protocol as p
from distgan.checkpoint import (
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prefixed,
    save_checkpoint,
    unprefixed,
)
from distgan.config import TrainConfig
from distgan.data.sources import LabelledImages
from distgan.images import to_unit_range
from distgan.losses import discriminator_loss, generator_loss
from distgan.models import ModelFactory
from distgan.networks import (
    adam,
    adam_state,
    build_discriminator,
    build_generator,
    cpu_state_dict,
    flat_parameters,
    load_adam_state,
    set_flat_parameters,
    train_mode,
)
from distgan.run_folder import prune_checkpoints, round_stem
from distgan.seeding import draw_seed, make_generator, seeded

if TYPE_CHECKING:
    from distgan.privacy.mechanisms import PartyPrivacy


class Party:
    """One data holder: local data, D_j, its optimizer; handles protocol requests."""

    def __init__(self, party_id: int, data: LabelledImages, factory: ModelFactory, train: TrainConfig,
                 seed: int, state_dir: Path | None = None, device: torch.device | str = "cpu",
                 num_labels: int = 0, privacy: PartyPrivacy | None = None) -> None:
        if len(data) == 0:
            raise ValueError(f"party {party_id}: no samples")
        self.party_id = party_id
        self.name = f"party {party_id}"
        self._data = data
        self._factory = factory
        self._train = train
        self._seed = seed
        self._device = torch.device(device)
        self._state_dir = state_dir
        self._num_labels = num_labels
        self._rng = make_generator(seed, "party", party_id)
        self.discriminator = build_discriminator(factory, seed).to(self._device)
        self.d_optimizer = adam(self.discriminator, train.lr_d, train)
        # Differential privacy (distgan.privacy): runs the D phase under DP-SGD and filters every reply.
        self.privacy = privacy
        if privacy is not None:
            privacy.attach(self.discriminator, self.d_optimizer, data, self._device)
        self._local_generator: nn.Module | None = None
        self._g_optimizer: torch.optim.Optimizer | None = None
        self._handlers: dict[type[p.Message], Callable[[Any], p.Message]] = {
            p.TrainDiscriminator: self._train_discriminator,
            p.QueryFeedback: self._query_feedback,
            p.TrainAndUpload: self._train_and_upload,
            p.TrainLocalGAN: self._train_local_gan,
            p.ExportDiscriminator: self._export_discriminator,
            p.ImportDiscriminator: self._import_discriminator,
            p.SaveState: self._save_state,
            p.LoadState: self._load_state,
            p.Describe: self._describe,
            p.ReleaseEmbedding: self._release_embedding,
            p.GenerateAndUpload: self._generate_and_upload,
            p.TrainGeneratorEpoch: self._train_generator_epoch,
        }

    @property
    def expectations(self) -> p.Expectations:
        return p.Expectations(self._factory.image_shape, self._train.batch_size,
                              max(self._train.local_steps, 1) * 4)

    # -- entry point --------------------------------------------------------------------------------
    def handle(self, request: p.Message) -> p.Message:
        """Validate a request from the coordinator, carry it out, return the reply."""
        handler = self._handlers.get(type(request))
        if handler is None:
            raise p.ProtocolError(f"{self.name}: no handler for {type(request).__name__}")
        request.validate("coordinator", self.expectations)
        privacy = self.privacy
        if privacy is None:
            return self._run(handler, request, lambda: draw_seed(self._rng))
        # Under DP the dropout masks come from the party's secret stream (the coordinator knows the
        # run seed), and the answer goes through the privacy engine: journal, cache, release filter.
        return privacy.answer(request, lambda: self._run(handler, request, privacy.dropout_seed))

    def _run(self, handler: Callable[[Any], p.Message], request: p.Message, draw: Callable[[], int]) -> p.Message:
        """Torch's global RNG (dropout in D) runs under a seed from ``draw`` for requests that run D: without
        DP from the party's own checkpointed generator, so runs resume bit-exactly and every runtime draws
        the same masks. Only requests that run D draw, so checkpoint frequency never changes a run."""
        randomness = seeded(draw(), self._device) if request.runs_discriminator \
            else contextlib.nullcontext()
        with randomness:
            return handler(request)

    # -- the D phase ------------------------------------------------------------------------------
    def _real_batch(self, size: int) -> torch.Tensor:
        index = torch.randint(len(self._data), (size,), generator=self._rng)
        return to_unit_range(self._data.images[index]).to(self._device)

    def _discriminator_steps(self, fakes: torch.Tensor) -> p.DiscriminatorStats:
        """``train.d_steps`` D steps per generated batch, each with a fresh real batch of the same size."""
        fakes = fakes.repeat_interleave(self._train.d_steps, dim=0) if self._train.d_steps > 1 else fakes
        if self.privacy is not None and self.privacy.private_discriminator:
            return self.privacy.discriminator_steps(fakes)
        train_mode(self.discriminator)
        totals = torch.zeros(3)
        for fake in fakes.to(self._device):
            real = self._real_batch(fake.shape[0])
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            loss = discriminator_loss(real_logits, fake_logits)
            self.d_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.d_optimizer.step()
            totals += torch.stack([loss.detach(), torch.sigmoid(real_logits.detach()).mean(),
                                   torch.sigmoid(fake_logits.detach()).mean()]).cpu()
        d_loss, d_real, d_fake = (totals / len(fakes)).tolist()
        return p.DiscriminatorStats(d_loss=d_loss, d_real=d_real, d_fake=d_fake, steps=len(fakes))

    def _feedback(self, fakes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D_j's logits on each generated batch and d logit / d image, per sample."""
        logits, gradients = [], []
        for fake in fakes.to(self._device):
            image = fake.detach().requires_grad_(True)
            logit = self.discriminator(image)
            (gradient,) = torch.autograd.grad(logit.sum(), image)
            logits.append(logit.detach())
            gradients.append(gradient)
        return p.stacked(logits), p.stacked(gradients)

    # -- handlers -----------------------------------------------------------------------------------
    def _train_discriminator(self, request: p.TrainDiscriminator) -> p.Message:
        stats = self._discriminator_steps(request.fakes)
        if not request.feedback:
            return stats
        logits, gradients = self._feedback(request.fakes)
        return p.Feedback(stats, logits, gradients)

    def _query_feedback(self, request: p.QueryFeedback) -> p.Message:
        logits, gradients = self._feedback(request.fakes)
        return p.Feedback(p.DiscriminatorStats(), logits, gradients)

    def _train_and_upload(self, request: p.TrainAndUpload) -> p.Message:
        return self._upload_after_training(request, request.fakes)

    def _generate_and_upload(self, request: p.GenerateAndUpload) -> p.Message:
        """server-d with G's weights: the same D work on fakes this party makes from G."""
        generator = self._load_generator(request)
        batch, latent = self._train.batch_size, self._factory.latent_dim
        latents = torch.randn(request.steps, batch, latent, generator=self._rng)
        train_mode(generator)  # as the platform's fakes: batch norm in training mode
        with torch.no_grad():
            fakes = torch.stack([generator(z.to(self._device)) for z in latents])
        return self._upload_after_training(request, fakes)

    def _upload_after_training(self, request: p.TrainAndUpload | p.GenerateAndUpload,
                               fakes: torch.Tensor) -> p.Message:
        if request.download_indices is not None and request.download_values is not None:
            set_flat_parameters(self.discriminator, request.download_indices, request.download_values)
        before = flat_parameters(self.discriminator)
        stats = self._discriminator_steps(fakes)
        delta = flat_parameters(self.discriminator) - before
        count = max(1, math.ceil(request.upload_fraction * delta.numel()))
        if request.selection == "largest":
            indices = delta.abs().topk(count).indices
        else:
            indices = torch.randperm(delta.numel(), generator=self._rng)[:count].to(delta.device)
        indices = indices.sort().values
        return p.DeltaUpload(stats, indices.cpu().long(), delta[indices].float().cpu())

    def _ensure_local_generator(self) -> nn.Module:
        if self._local_generator is None:
            self._local_generator = build_generator(self._factory, self._seed).to(self._device)
            self._g_optimizer = adam(self._local_generator, self._train.lr_g, self._train)
        return self._local_generator

    def _load_generator(self, request: p.TrainLocalGAN | p.GenerateAndUpload | p.TrainGeneratorEpoch) -> nn.Module:
        """The party's copy of G, with the request's weights when it carries some."""
        generator = self._ensure_local_generator()
        if request.generator:
            try:
                generator.load_state_dict(request.generator)
            except RuntimeError as error:
                raise p.ProtocolError(f"{self.name}: {request.kind}.generator does not fit the run's G: "
                                      f"{error}") from None
        return generator

    def _gan_steps(self, steps: int) -> tuple[p.DiscriminatorStats, float]:
        """``steps`` times: a D step on real vs G(z), then a G step against D -- the usual GAN loop on
        this party's data and its own copy of G. Returns the mean D statistics and G loss."""
        generator = self._ensure_local_generator()
        assert self._g_optimizer is not None
        batch, latent = self._train.batch_size, self._factory.latent_dim
        totals = torch.zeros(4)
        train_mode(generator)
        for _ in range(steps):
            z = torch.randn(batch, latent, generator=self._rng).to(self._device)
            fake = generator(z)
            stats = self._discriminator_steps(fake.detach().unsqueeze(0))
            # G's step reads D_j and z only: under DP-SGD it is post-processing of the private D.
            g_loss = generator_loss(self.discriminator(fake))
            self._g_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            self._g_optimizer.step()
            totals += torch.tensor([stats.d_loss, stats.d_real, stats.d_fake, float(g_loss.detach())])
        d_loss, d_real, d_fake, g_mean = (totals / steps).tolist()
        return p.DiscriminatorStats(d_loss=d_loss, d_real=d_real, d_fake=d_fake,
                                    steps=steps * self._train.d_steps), g_mean

    def _train_local_gan(self, request: p.TrainLocalGAN) -> p.Message:
        generator = self._load_generator(request)
        if request.discriminator:
            self.discriminator.load_state_dict(request.discriminator)
        stats, g_mean = self._gan_steps(request.steps)
        return p.WeightsReply(
            stats,
            generator=cpu_state_dict(generator) if request.return_generator else None,
            discriminator=cpu_state_dict(self.discriminator) if request.return_discriminator else None,
            g_loss=g_mean)

    def _train_generator_epoch(self, request: p.TrainGeneratorEpoch) -> p.Message:
        """round-robin per epoch (Alg. 3): the platform's G, with its Adam state, trains here against D_j
        for one pass over this party's data, then goes back."""
        generator = self._load_generator(request)
        assert self._g_optimizer is not None
        try:
            load_adam_state(self._g_optimizer, request.optimizer)
        except (RuntimeError, ValueError, KeyError) as error:
            raise p.ProtocolError(f"{self.name}: {request.kind}.optimizer does not fit G: {error}") from None
        steps = self._train.steps_per_epoch(self._epoch_samples())
        stats, g_mean = self._gan_steps(steps)
        return p.GeneratorReply(stats, cpu_state_dict(generator), adam_state(self._g_optimizer), g_mean, steps)

    def _epoch_samples(self) -> int:
        """Records one pass visits: under DP the published (noisy) count, as the exact one must not set
        a number that leaves the party (the steps) and the plan counted the published one."""
        if self.privacy is not None and self.privacy.description is not None:
            return self.privacy.description.samples
        return len(self._data)

    def _export_discriminator(self, request: p.ExportDiscriminator) -> p.Message:
        return p.WeightsReply(p.DiscriminatorStats(), discriminator=cpu_state_dict(self.discriminator))

    def _import_discriminator(self, request: p.ImportDiscriminator) -> p.Message:
        self.discriminator.load_state_dict(request.discriminator)
        return p.Ack()

    def _describe(self, request: p.Describe) -> p.Message:
        labels = self._data.labels[self._data.labels >= 0]
        counts = torch.bincount(labels, minlength=self._num_labels) if len(labels) else torch.zeros(0)
        return p.Description(samples=len(self._data), label_counts=counts.long(),
                             image_shape=torch.tensor(self._factory.image_shape, dtype=torch.int64))

    def _release_embedding(self, request: p.ReleaseEmbedding) -> p.Message:
        """dp-merf: the exact summed label embedding; a private party's release filter noises it once
        and caches it, so a repeated request is answered from the cache without touching the data."""
        from distgan.privacy.random_features import RandomFeatures, embed_images

        if self.privacy is not None:
            cached = self.privacy.cached_release(request)
            if cached is not None:
                return cached
        labels = self._data.labels
        if request.num_labels == 1:
            labels = torch.zeros_like(labels)  # an unconditional embedding: every record in one column
        elif bool((labels < 0).any()):
            raise p.ProtocolError(f"{self.name}: {request.kind} with {request.num_labels} labels, but this "
                                  "party's data is unlabelled (ask for num_labels=1)")
        elif int(labels.max()) >= request.num_labels:
            raise p.ProtocolError(f"{self.name}: {request.kind} asks for {request.num_labels} labels, this party "
                                  f"holds label {int(labels.max())}")
        feature_map = RandomFeatures(request.feature_seed, request.features, request.lengthscale,
                                     math.prod(self._factory.image_shape),
                                     p.parse_lengthscales(request.extra_lengthscales, f"{self.name}: {request.kind}"))
        return p.EmbeddingRelease(embed_images(self._data.images, labels, feature_map, request.num_labels),
                                  request.feature_seed, request.features, request.lengthscale,
                                  extra_lengthscales=request.extra_lengthscales)

    # -- state ----------------------------------------------------------------------------------
    def _state_stem(self, round_index: int) -> Path:
        if self._state_dir is None:
            raise p.ProtocolError(f"{self.name}: no state folder configured, cannot checkpoint")
        return round_stem(self._state_dir, round_index)

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The party's whole mutable state (D, optimizers, RNG, local G) as tensors plus JSON-able
        meta: what SaveState writes, and what a runtime that restarts the party between requests
        (Flower deployment) carries over."""
        tensors = prefixed("discriminator", self.discriminator.state_dict())
        d_opt, d_opt_meta = optimizer_to_tensors(self.d_optimizer, "d_optimizer")
        tensors.update(d_opt)
        tensors["rng"] = self._rng.get_state()
        meta: dict[str, Any] = {"party": self.party_id, "d_optimizer": d_opt_meta}
        if self._local_generator is not None and self._g_optimizer is not None:
            tensors.update(prefixed("generator", self._local_generator.state_dict()))
            g_opt, meta["g_optimizer"] = optimizer_to_tensors(self._g_optimizer, "g_optimizer")
            tensors.update(g_opt)
        if self.privacy is not None:
            privacy_tensors, meta["privacy"] = self.privacy.state()
            tensors.update(prefixed("privacy", privacy_tensors))
        return tensors, meta

    def _save_state(self, request: p.SaveState) -> p.Message:
        tensors, meta = self.state_tensors()
        meta["round"] = request.round
        save_checkpoint(self._state_stem(request.round), tensors, meta)
        self._prune_states(keep=request.round)
        return p.Ack()

    def _prune_states(self, keep: int) -> None:
        """Keep the newest two checkpoints: the one just written and the previous good one."""
        assert self._state_dir is not None
        prune_checkpoints(self._state_dir)
        if self.privacy is not None:  # no load can go back before the oldest kept checkpoint
            stems = sorted({path.with_suffix("") for path in self._state_dir.glob("round-*.json")})
            if stems:
                self.privacy.prune_replies(int(stems[0].name.removeprefix("round-")))

    def _load_state(self, request: p.LoadState) -> p.Message:
        self.load_state_tensors(*load_checkpoint(self._state_stem(request.round)))
        return p.Ack()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_tensors` returned."""
        self.discriminator.load_state_dict(unprefixed("discriminator", tensors))
        optimizer_from_tensors(self.d_optimizer, "d_optimizer", tensors, meta["d_optimizer"])
        self._rng.set_state(tensors["rng"])
        if "g_optimizer" in meta:
            generator = self._ensure_local_generator()
            generator.load_state_dict(unprefixed("generator", tensors))
            assert self._g_optimizer is not None
            optimizer_from_tensors(self._g_optimizer, "g_optimizer", tensors, meta["g_optimizer"])
        if self.privacy is not None:
            if "privacy" not in meta:
                raise ValueError(f"{self.name}: the saved state has no privacy ledger, but this run is private")
            self.privacy.load_state(unprefixed("privacy", tensors), meta["privacy"])


"""dp-merf (Harder et al., AISTATS 2021): each party releases once; G matches the sum of the releases.

Round 1 asks every party, in one round trip, for the sum over its records of ``[a phi(x), b] (x)
onehot(y)`` (:mod:`distgan.privacy.random_features`; the feature seed, count and lengthscales -- one, or several
kernels with ``strategy.extra_kernel_scales`` -- are public numbers from the config and the image size). Under DP (``privacy.mechanism=auto`` picks
``mean-embedding``) each party adds Gaussian noise once, spends one Gaussian release in its ledger and
answers any repeat of the request with the same reply. The coordinator sums the parties' embeddings
(the noise of K parties adds in quadrature, the signal linearly), reads the noisy label histogram off
the constant row, and then trains a **label-conditional G** for as many rounds as it likes to minimise

    sum_c | E_c / n - p_c * a * mean_{z} phi(G(z, c)) |^2

(the squared MMD of the random-feature kernel between the data and G, jointly over image and label):
post-processing of the releases, so no round after the first costs any privacy or touches a party.
Each round is ``train.local_steps`` G steps on ``train.batch_size`` samples split evenly over the
labels present. The summed embedding is kept in the coordinator's checkpoint, so a resume asks nothing.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from distgan import protocol as p
from distgan.config import Config
from distgan.models.conditional import LabelConditionalGenerator
from distgan.parties import Parties
from distgan.privacy.random_features import COUNT_WEIGHT, RandomFeatures, public_lengthscale
from distgan.seeding import derive_seed
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext, only


@STRATEGIES.register("dp-merf", "release once: each party sends one (noisy) label-conditional random-feature "
                                "mean embedding; a label-conditional G is trained to match their sum")
class DPMERF(Strategy):
    name = "dp-merf"
    label_conditional = True

    @classmethod
    def sends(cls, config: Config) -> tuple[type[p.Message], ...]:
        return (p.ReleaseEmbedding,)

    @classmethod
    def generator_steps_per_round(cls, config: Config) -> int:
        return config.train.local_steps

    def __init__(self, context: StrategyContext) -> None:
        super().__init__(context)
        generators = [self.trainer.module] + ([] if self.trainer.average is None else [self.trainer.average])
        self.generators = [cast(LabelConditionalGenerator, g) for g in generators]
        self.num_labels = self.generators[0].num_labels
        pixels = math.prod(context.factory.image_shape)
        strategy = self.config.strategy
        self.feature_map = RandomFeatures(derive_seed(self.config.runtime.seed, "dp-merf-features"),
                                          strategy.random_features,
                                          public_lengthscale(pixels, strategy.kernel_scale), pixels,
                                          tuple(public_lengthscale(pixels, scale)
                                                for scale in strategy.extra_kernel_scales))
        self.frequencies = self.feature_map.frequencies(self.trainer.device)
        self.released: torch.Tensor | None = None
        """The sum of the parties' released embeddings ``[features + 1, labels]`` (float64)."""
        self.label_weights = torch.zeros(0)
        self.target = torch.zeros(0)

    def request(self) -> p.ReleaseEmbedding:
        feature_map = self.feature_map
        return p.ReleaseEmbedding(feature_map.seed, feature_map.features, feature_map.lengthscale, self.num_labels,
                                  p.format_lengthscales(feature_map.extra_lengthscales))

    def run_round(self, round_index: int, parties: Parties, selected: list[int]) -> RoundResult:
        stats: dict[int, p.DiscriminatorStats] = {}
        if self.released is None:
            stats = self._collect(parties)
        losses = [self._generator_step() for _ in range(self.local_steps)]
        return RoundResult(sum(losses) / len(losses), stats)

    def _collect(self, parties: Parties) -> dict[int, p.DiscriminatorStats]:
        """Every active party's release, in one request each (all parties: there is only one round trip)."""
        replies = only(parties.request_all(self.request()), p.EmbeddingRelease)
        if not replies:
            raise RuntimeError("dp-merf: no party released its embedding")
        releases = {j: cast(p.EmbeddingRelease, reply) for j, reply in replies.items()}
        self._use(sum(release.embedding.double() for release in releases.values()))  # type: ignore[arg-type]
        return {j: p.DiscriminatorStats(epsilon=release.epsilon) for j, release in releases.items()}

    def _use(self, released: torch.Tensor) -> None:
        """Target of G's training and its label weights, from the summed (noisy) embedding."""
        self.released = released
        counts = (released[-1] / COUNT_WEIGHT).clamp_min(0.0)  # the noisy label histogram
        if not bool(counts.sum() > 0):
            counts = torch.ones_like(counts)  # noise swamped every count: no label information
        self.label_weights = (counts / counts.sum()).float()
        self.target = (released[:-1] / counts.sum()).float().to(self.trainer.device)
        for generator in self.generators:
            generator.set_label_weights(self.label_weights)

    def _generator_step(self) -> float:
        assert self.released is not None
        present = self.label_weights.nonzero().squeeze(1)
        per_label = max(1, math.ceil(self.config.train.batch_size / len(present)))
        labels = present.repeat_interleave(per_label)
        latents = self.trainer.latents(len(labels))
        generator = self.trainer.module
        generator.train()
        images = generator(latents.to(self.trainer.device), labels.to(self.trainer.device))
        features = self.feature_map(images, self.frequencies)[:, :-1]
        per_label_mean = torch.zeros_like(self.target).index_add_(1, labels.to(self.trainer.device), features.T)
        generated = per_label_mean / per_label * self.label_weights.to(self.trainer.device)
        loss = (self.target - generated).pow(2).sum()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.trainer.optimizer.step()
        return float(loss.detach())

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.released is None else {"released": self.released}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "released" in tensors:
            self._use(tensors["released"].double())

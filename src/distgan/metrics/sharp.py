"""A feature space that sees defects: a LeNet trained *without* augmentation (issue 12, item 3).

The shipped evaluator behind ``cfid`` learns with random shifts, rotations and scalings, which makes
its features tolerant of exactly what GAN samples get wrong (noise, blur, strokes out of place):
real digits with Gaussian noise sigma 0.3 score cfid 18, barely above the default run. This space is
the TSTR recipe (:func:`distgan.metrics.digits.train_classifier`: a small LeNet, 8 epochs, no
augmentation) trained once on the domain's *train* split; its 128-d penultimate activations embed
images for:

- ``fd-sharp``: the Fréchet distance of generated vs the domain's test split in this space;
- ``precision`` / ``recall`` / ``density`` / ``manifold-coverage`` (:mod:`distgan.metrics.manifold`).

One space per evaluation domain (:data:`SHARP_OF_DOMAIN`): digits (the bundled MNIST's 4,000 train
digits, ``assets/mnist-sharp.safetensors``) and fashion (Fashion-MNIST's 60,000 train images,
``assets/fashion-sharp.safetensors``). ``distgan evaluator sharp --domain mnist|fashion-mnist`` retrains them.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distgan.data import LabelledImages
from distgan.metrics.base import METRICS, EvalContext, Metric, MetricUnavailable, MetricValues
from distgan.metrics.evaluator import load_weights, save_weights, weights_path
from distgan.metrics.frechet import GaussianStats, frechet_distance
from distgan.metrics.reference import DIGIT_SHAPE, evaluation_split, to_unit_range

SHARP_SEED = 0
"""Seed of the sharp LeNet's training (weights, batch order)."""


@dataclass(frozen=True)
class SharpDomain:
    """Where a domain's sharp feature space comes from and what it is compared with."""

    name: str
    """The public data source (:mod:`distgan.data`) whose evaluation split it learns and is compared with
    (:func:`distgan.metrics.reference.evaluation_split`); ``distgan evaluator sharp --domain NAME``."""
    weights: str
    """The weights file in ``distgan/assets``."""
    image_shape: tuple[int, int, int] = DIGIT_SHAPE

    def train_split(self) -> LabelledImages:
        """The train split (what the LeNet learns from)."""
        return evaluation_split(self.name).train

    def test_split(self) -> LabelledImages:
        """The test split (the reference the metrics compare with)."""
        return evaluation_split(self.name).held_out

    @property
    def weights_path(self) -> Path:
        return weights_path(self.weights)


DOMAINS: dict[str, SharpDomain] = {
    # The bundled MNIST: 4,000 train digits, 1,000 test digits.
    "mnist": SharpDomain("mnist", "mnist-sharp.safetensors"),
    # Fashion-MNIST: the 60,000 train-* images, the 10,000 t10k-* images.
    "fashion-mnist": SharpDomain("fashion-mnist", "fashion-sharp.safetensors"),
}


SHARP_OF_DOMAIN = {"digits": "mnist", "fashion": "fashion-mnist"}
"""Evaluation domain (:mod:`distgan.metrics.domains`) -> its sharp feature space: a domain's images are
only ever embedded by the LeNet trained on that domain."""


def domain_of(context: EvalContext) -> SharpDomain:
    """The sharp space of the run's evaluation domain: never a digit space for other images."""
    from distgan.metrics.domains import evaluation_of

    evaluation_domain = evaluation_of(context).domain.name  # MetricUnavailable (with why) for a run without one
    if evaluation_domain not in SHARP_OF_DOMAIN:
        raise MetricUnavailable(f"no sharp feature space for the {evaluation_domain} domain yet (sharp spaces: "
                                f"{', '.join(SHARP_OF_DOMAIN)})")
    domain = DOMAINS[SHARP_OF_DOMAIN[evaluation_domain]]
    if tuple(context.image_shape) != domain.image_shape:
        raise MetricUnavailable(f"the sharp metrics need {'x'.join(map(str, domain.image_shape))} images, this run "
                                f"makes {'x'.join(map(str, context.image_shape))}; use fid for other images")
    return domain


def feature_extractor(classifier: nn.Sequential) -> nn.Sequential:
    """The LeNet without its last layer: the 128-d penultimate (post-ReLU) activations."""
    return nn.Sequential(*list(classifier)[:-1])


def train_sharp(domain: SharpDomain, seed: int = SHARP_SEED) -> tuple[nn.Sequential, dict[str, float]]:
    """Train the sharp LeNet on the domain's train split; report its test-split accuracy."""
    from distgan.metrics.digits import train_classifier

    train, test = domain.train_split(), domain.test_split()
    started = time.perf_counter()
    model = train_classifier(to_unit_range(train.images), train.labels, seed=seed)
    with torch.no_grad():
        correct = torch.cat([model(part).argmax(1) for part in to_unit_range(test.images).split(1000)]) == test.labels
    report = {"test_accuracy": float(correct.double().mean()), "train_samples": len(train),
              "seconds": time.perf_counter() - started}
    return model, report  # type: ignore[return-value]


def save_sharp(model: nn.Module, path: Path, report: dict[str, float], seed: int) -> None:
    save_weights(model, path, {"recipe": json.dumps({"seed": seed, "augmentation": "none"}),
                               "report": json.dumps(report)})


@functools.lru_cache(maxsize=4)
def load_sharp(path: Path) -> nn.Sequential:
    """The sharp LeNet's feature extractor (cached: treat it as read-only)."""
    from distgan.metrics.digits import fresh_classifier

    model = fresh_classifier()
    load_weights(model, path, "sharp LeNet", "distgan evaluator sharp")
    assert isinstance(model, nn.Sequential)
    return feature_extractor(model.eval())


@torch.no_grad()
def sharp_features(domain: SharpDomain, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """float64 [N, 128] features of images in [-1, 1]."""
    if tuple(images.shape[1:]) != domain.image_shape:
        raise ValueError(f"the {domain.name} sharp LeNet takes images of shape {domain.image_shape}, "
                         f"got {tuple(images.shape[1:])}")
    extractor = load_sharp(domain.weights_path)
    return torch.cat([extractor(part).double() for part in images.float().split(chunk)])


@functools.lru_cache(maxsize=4)
def reference_features(domain: SharpDomain) -> torch.Tensor:
    return sharp_features(domain, to_unit_range(domain.test_split().images))


@functools.lru_cache(maxsize=4)
def reference_stats(domain: SharpDomain) -> GaussianStats:
    return GaussianStats.of(reference_features(domain))


def generated_features(context: EvalContext) -> torch.Tensor:
    """Sharp features of the context's generated images, computed once and shared."""
    if "sharp-features" not in context.cache:
        context.cache["sharp-features"] = sharp_features(domain_of(context), context.generated)
    features: torch.Tensor = context.cache["sharp-features"]
    return features


def fd_sharp(context: EvalContext) -> MetricValues:
    domain = domain_of(context)
    features = generated_features(context)
    return {"fd-sharp": frechet_distance(GaussianStats.of(features), reference_stats(domain)),
            "fd-sharp/generated": len(features), "fd-sharp/reference": len(reference_features(domain))}


def applies(image_shape: tuple[int, int, int], domain: str | None) -> bool:
    """A default metric wherever the run's evaluation domain has a sharp feature space."""
    from distgan.metrics.domains import has_domain

    return has_domain(image_shape, domain) and domain in SHARP_OF_DOMAIN


METRICS.register("fd-sharp", "Fréchet distance in the features of a LeNet trained without augmentation "
                 "(sees noise and blur), generated vs the test split")(Metric(fd_sharp, True, applies))

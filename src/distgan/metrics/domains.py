"""Evaluation domains: which evaluator, and which test split, judge a run's images.

A *domain* is a kind of image with a shipped evaluator: ``digits`` (the MNIST evaluator, reference:
the bundled MNIST's test split) and ``fashion`` (the Fashion-MNIST evaluator, reference: its 10,000
``t10k`` images). Every labelled metric (cfid, coverage, party-coverage, cis, tstr, and any metric
added beside them) computes with the evaluator of the run's domain, never another's: a run with no
domain gets an "unavailable" line, not a number.

**A run's domain** (:func:`run_domain`): ``data.domain`` when set (``none`` turns the labelled metrics
off), else what the source declares (:data:`SOURCE_DOMAINS`: ``mnist`` -> digits, ``fashion-mnist``
-> fashion; ``folder:``, ``lsun:``, ``fake`` declare none). A declared domain is *checked* on the run's
own labelled data wherever that data is readable: its evaluator must recognise the labels of the
run's test split (or train part) with accuracy >= :data:`DOMAIN_CHECK_ACCURACY`. So
``--data mnist:/usr/share/datasets/fashion-mnist`` (IDX files that are not digits) is refused the
digit metrics, with a message naming ``data.domain=fashion``.

**A run's reference** is the run's own test split (no party ever held it) when it is readable here,
else the domain's public test split (a Flower coordinator that holds no data).

**For metric authors** — the one call: ``evaluation_of(context)`` returns a :class:`RunEvaluation`
with ``.evaluator`` (the domain's CNN), ``.reference`` (the test split, uint8 images and labels),
``.reference_outputs()`` (evaluator features and class probabilities on it, cached), ``.train`` (the
domain's evaluator train split, e.g. for a real-data baseline) and ``.domain``; it raises
:class:`~distgan.metrics.base.MetricUnavailable` (with the reason) when the run has no domain.
Without a run (benchmarks): ``domain_evaluation("fashion")``. Register the metric with
``applies=has_domain`` so it is a default exactly where an evaluator exists.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from distgan.data import LabelledImages
from distgan.metrics.base import EvalContext, MetricUnavailable
from distgan.metrics.evaluator import (
    DigitClassifier,
    Outputs,
    TrainRecipe,
    evaluate_images,
    load_evaluator,
    weights_path,
)
from distgan.metrics.reference import DIGIT_SHAPE, EvaluationSplit, evaluation_split, to_unit_range
from distgan.registry import Registry

if TYPE_CHECKING:
    from distgan.config import Config

log = logging.getLogger("distgan")

NO_DOMAIN = "none"
"""``data.domain=none``: the run's images have no evaluator (labelled metrics off)."""
DOMAIN_CHECK_ACCURACY = 0.8
"""A domain's evaluator must classify a run's labelled data this well to judge it (real digits under the
digit evaluator: 0.99; Fashion-MNIST under it: about 0.1)."""
DOMAIN_CHECK_SAMPLES = 1000


@dataclass(frozen=True)
class Domain:
    name: str
    source: str
    """The public source whose train part trains the evaluator and whose test split is the reference."""
    weights: str
    """The evaluator's weights file in ``distgan/assets``."""
    class_names: tuple[str, ...]
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    """How ``distgan evaluator train --domain NAME`` trains the shipped weights."""
    image_shape: tuple[int, int, int] = DIGIT_SHAPE

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def evaluator(self) -> DigitClassifier:
        return load_evaluator(weights_path(self.weights))

    def split(self) -> EvaluationSplit:
        return evaluation_split(self.source)


DOMAINS: Registry[Domain] = Registry("evaluation domain")
DOMAINS.register("digits", "handwritten digits 0-9: the MNIST evaluator, trained on the bundled MNIST's 4,000 "
                           "train digits")(
    Domain("digits", "mnist", "mnist-evaluator.safetensors", tuple(str(d) for d in range(10))))
DOMAINS.register("fashion", "Fashion-MNIST's 10 garment classes: the Fashion-MNIST evaluator, trained on its "
                            "60,000 train images")(
    Domain("fashion", "fashion-mnist", "fashion-evaluator.safetensors",
           ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
           TrainRecipe(epochs=4, max_shift_px=1.0, max_rotation_deg=0.0, max_scale=0.0)))

SOURCE_DOMAINS = {"mnist": "digits", "fashion-mnist": "fashion"}
"""The domain each source declares, by source name (checked on the data: ``mnist:DIR`` may hold anything)."""


@dataclass
class RunEvaluation:
    """The evaluator and test split that judge one run's images (see the module docstring)."""

    domain: Domain
    reference: LabelledImages
    """The test split the metrics compare with: no party ever held it."""
    reference_name: str
    _outputs: Outputs | None = None

    @property
    def evaluator(self) -> DigitClassifier:
        return self.domain.evaluator()

    @property
    def train(self) -> LabelledImages:
        """The domain's evaluator train split (real data for baselines such as TSTR's)."""
        return self.domain.split().train

    def reference_outputs(self) -> Outputs:
        if self._outputs is None:
            self._outputs = evaluate_images(self.evaluator, to_unit_range(self.reference.images))
        return self._outputs

    def outputs(self, images: torch.Tensor) -> Outputs:
        """The evaluator on images in [-1, 1]."""
        return evaluate_images(self.evaluator, images)


@dataclass(frozen=True)
class DomainDecision:
    """A run's domain (None: no evaluator judges its images) and why, for the log and metrics.jsonl."""

    domain: str | None
    note: str


@functools.lru_cache(maxsize=4)
def domain_evaluation(name: str) -> RunEvaluation:
    """The domain's own evaluator and public test split (no run needed: benchmarks, calibration)."""
    domain = DOMAINS.get(name)
    return RunEvaluation(domain, domain.split().held_out, f"{domain.source} test split")


def declared_domain(config: Config) -> str | None:
    chosen = getattr(config.data, "domain", None)
    if chosen is not None:
        return None if chosen == NO_DOMAIN else str(DOMAINS.get(chosen).name)
    return SOURCE_DOMAINS.get(config.data.source.split(":", 1)[0])


def check_domain(domain: Domain, data: LabelledImages, what: str) -> str | None:
    """None when ``domain``'s evaluator recognises ``data``'s labels; else the reason it may not judge them."""
    if data.shape != domain.image_shape:
        return (f"the {domain.name} evaluator takes {'x'.join(map(str, domain.image_shape))} images, {what} holds "
                f"{'x'.join(map(str, data.shape))}")
    if len(data) == 0 or not data.has_labels:
        return None  # nothing to check against: the declaration stands
    sample = data.subset(torch.arange(min(len(data), DOMAIN_CHECK_SAMPLES)))
    predicted = evaluate_images(domain.evaluator(), to_unit_range(sample.images)).probabilities.argmax(1)
    accuracy = float((predicted == sample.labels).double().mean())
    if accuracy >= DOMAIN_CHECK_ACCURACY:
        return None
    return (f"the {domain.name} evaluator recognises only {accuracy:.0%} of the labels of {what} (a real "
            f"{domain.name} source: over {DOMAIN_CHECK_ACCURACY:.0%}): these images are not {domain.name}")


def run_domain(config: Config) -> DomainDecision:
    """Decide which evaluator judges this run (see the module docstring); reads the run's data when it can."""
    from distgan.assembly import plan_data

    try:
        name = declared_domain(config)
    except ValueError as error:
        raise ValueError(f"data.domain={config.data.domain!r}: {error}") from None  # type: ignore[attr-defined]
    if name is None:
        reason = ("data.domain=none" if getattr(config.data, "domain", None) == NO_DOMAIN
                  else f"data source {config.data.source!r} declares no domain")
        return DomainDecision(None, f"{reason}: no evaluator for these images (domains with one: "
                                    f"{', '.join(DOMAINS.names())}; a source of such images declares it with "
                                    "--set data.domain=NAME)")
    domain = DOMAINS.get(name)
    try:
        plan = plan_data(config)
    except (ValueError, OSError) as error:
        return DomainDecision(name, f"{name} (declared; not checked: the data is not readable here: {error})")
    checked = plan.test if plan.test is not None and len(plan.test) else plan.data
    problem = check_domain(domain, checked, f"data source {config.data.source!r}")
    if problem is not None:
        others = [d for d in DOMAINS.names() if d != name]
        return DomainDecision(None, f"{problem}; if they are, say so with --set data.domain=NAME "
                                    f"({', '.join(others)}), or data.domain=none")
    return DomainDecision(name, f"{name} (its evaluator recognises the labels of the run's data)")


def run_evaluation(config: Config, decision: DomainDecision) -> RunEvaluation | None:
    """The evaluation of a run whose domain is decided: the run's own test split as the reference when
    readable here, else the domain's public one."""
    if decision.domain is None:
        return None
    from distgan.assembly import plan_data

    public = domain_evaluation(decision.domain)
    try:
        test = plan_data(config).test
    except (ValueError, OSError):
        test = None
    if test is None or len(test) == 0 or test.shape != public.domain.image_shape or not test.has_labels:
        return public
    if config.data.source == public.domain.source and config.data.image_size in (None, 28):
        return public  # the same test split: share its cached evaluator outputs
    return RunEvaluation(public.domain, test, f"the run's test split ({config.data.source})")


def has_domain(image_shape: tuple[int, int, int], domain: str | None) -> bool:
    """``Metric.applies`` of the labelled metrics: a default wherever the run has an evaluator."""
    return domain is not None and tuple(image_shape) == DOMAINS.get(domain).image_shape


def evaluation_of(context: EvalContext) -> RunEvaluation:
    """The evaluator and test split of the run ``context`` evaluates (the one call for metric authors)."""
    evaluation = context.evaluation
    if evaluation is None:
        raise MetricUnavailable(context.no_evaluation_reason)
    if tuple(context.image_shape) != evaluation.domain.image_shape:
        raise MetricUnavailable(f"the {evaluation.domain.name} evaluator takes "
                                f"{'x'.join(map(str, evaluation.domain.image_shape))} images, this run makes "
                                f"{'x'.join(map(str, context.image_shape))}; use fid for other images")
    return evaluation

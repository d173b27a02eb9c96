"""Evaluation against public references only: the MNIST evaluator, classifier-FID, label coverage,
TSTR, offline Inception FID; a registry (``METRICS``) and the hooks that run them during training."""

from distgan.metrics import digits, inception, manifold, sharp  # noqa: F401  (register the metrics)
from distgan.metrics.base import (
    METRICS,
    EvalContext,
    EvalSettings,
    MetricUnavailable,
    PartyLabels,
    compute_metrics,
    default_metrics,
)
from distgan.metrics.runs import attach_metrics, evaluate_run, read_metrics

__all__ = ["METRICS", "EvalContext", "EvalSettings", "MetricUnavailable", "PartyLabels", "attach_metrics",
           "compute_metrics", "default_metrics", "evaluate_run", "read_metrics"]

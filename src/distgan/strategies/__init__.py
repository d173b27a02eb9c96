"""Training strategies, one file each (registry: ``STRATEGIES``)."""

from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext

from distgan.strategies import avg_output, round_robin  # noqa: E402,F401,I001  (register)

__all__ = ["STRATEGIES", "RoundResult", "Strategy", "StrategyContext"]

"""Training strategies, one file each (registry: ``STRATEGIES``)."""

# Importing each strategy module registers it in STRATEGIES.
from distgan.strategies import (  # noqa: F401
    avg_output,
    dp_merf,
    fedgan,
    local_only,
    md_gan,
    round_robin,
    server_d,
)
from distgan.strategies.base import STRATEGIES, RoundResult, Strategy, StrategyContext

__all__ = ["STRATEGIES", "RoundResult", "Strategy", "StrategyContext"]

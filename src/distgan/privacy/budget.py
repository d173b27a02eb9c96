"""The coordinator's side of the budget: log epsilon, and end the run cleanly before it runs out.

Parties enforce their budgets themselves (a request that would overspend is refused before any
privacy is spent, :class:`~distgan.privacy.accounting.PrivacyBudgetExhausted`). This round hook
makes a clean end of it: after each round it reads every party's epsilon from the round's
record and asks the coordinator to stop (checkpoint, samples, report) when another round like the
last could exceed a party's budget. The extrapolation is safe from a party's second round on: RDP
epsilon is a minimum over orders of functions affine in the number of steps, hence concave, so
each round spends at most what the previous one did. Before that (one point, no slope), or when a
round was bigger than the last, the party's own refusal is the guard: it is marked failed for that
round (``runtime.on_party_failure=continue``, the default) and this hook then stops the run.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from distgan.config import Config

if TYPE_CHECKING:
    from distgan.coordinator import Coordinator

log = logging.getLogger("distgan")

EXHAUSTED_MARK = "PrivacyBudgetExhausted"
"""The exception name that appears in a party's failure text when it refused to overspend."""


class BudgetMonitor:
    """Round hook: per-party epsilon in the log; sets ``coordinator.stop_reason`` near the budget."""

    def __init__(self, config: Config) -> None:
        self.budget = config.privacy.epsilon
        self.log_every = config.output.log_every
        self._last: dict[str, float] | None = None

    def _previous_epsilons(self, coordinator: Coordinator, round_number: int) -> dict[str, float]:
        """After a resume, the spend so far comes from the rounds already in stats.jsonl."""
        last: dict[str, float] = {}
        if coordinator.stats_path.exists():
            for line in coordinator.stats_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record.get("round", 0) < round_number:
                    for party, stats in record.get("parties", {}).items():
                        last[party] = float(stats.get("epsilon", 0.0))
        return last

    def _log_plans(self, coordinator: Coordinator) -> None:
        """Each party's mechanism and noise, recomputed from public numbers (config, sample counts)."""
        from distgan.privacy.accounting import make_plan
        from distgan.privacy.mechanisms import resolve_mechanism

        config = coordinator.config
        mechanism = resolve_mechanism(config)
        for party, samples in sorted(coordinator.strategy.context.party_sizes.items()):
            log.info("privacy: party %d: %s", party, make_plan(config, mechanism, samples).describe())

    def __call__(self, coordinator: Coordinator, round_number: int, record: dict[str, Any]) -> None:
        if self._last is None:
            self._last = self._previous_epsilons(coordinator, round_number)
            self._log_plans(coordinator)
        spent = {party: float(stats["epsilon"]) for party, stats in record["parties"].items()}
        if round_number % self.log_every == 0 and spent:
            log.info("privacy: epsilon spent %s%s", ", ".join(f"party {j} {e:.3f}" for j, e in spent.items()),
                     "" if self.budget is None else f" (budget {self.budget:g} each)")
        refused = [j for j, why in coordinator.parties.failed.items() if EXHAUSTED_MARK in why]
        if refused:
            coordinator.stop_reason = (f"party {refused[0]} refused further work: its privacy budget is used up "
                                       f"({coordinator.parties.failed[refused[0]]})")
        elif self.budget is not None:
            for party, epsilon in spent.items():
                if party not in self._last:
                    continue  # one point gives no slope (and epsilon jumps at the first step); the party guards
                next_round = epsilon + (epsilon - self._last[party])
                if next_round > self.budget:
                    coordinator.stop_reason = (f"privacy budget of party {party} used up: epsilon {epsilon:.4g} "
                                               f"spent of {self.budget:g}; another round would reach about "
                                               f"{next_round:.4g}")
                    break
        self._last.update(spent)

"""The coordinator's side of the budget: log epsilon, and end the run cleanly before it runs out.

Parties enforce their budgets themselves (a request that would overspend is refused before any
privacy is spent, :class:`~distgan.privacy.accounting.PrivacyBudgetExhausted`). This round hook
makes a clean end of it: after each round it reads every party's epsilon from the round's record
and asks the coordinator to stop (checkpoint, samples, report) when the next round could take a
party over its budget.

The next round's cost is predicted exactly when it can be: every party's plan (noise, sample
rate, delta) follows from public numbers (the config and the party's sample count), so the hook
replays the party's accountant for the rounds it took part in and checks the replay against the
reported epsilon. When they disagree (a strategy that spends a different number of steps, a
resume with a changed plan) it falls back to a bound: RDP epsilon is a minimum over orders of
functions affine in the number of steps, hence concave, so a round spends at most what the
previous one did. Before a party has a previous round, its own refusal is the guard: it is marked
failed for that round (``runtime.on_party_failure=continue``, the default) and this hook then
stops the run.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from distgan.config import Config

if TYPE_CHECKING:
    from distgan.coordinator import Coordinator
    from distgan.privacy.accounting import PrivacyPlan

log = logging.getLogger("distgan")

EXHAUSTED_MARK = "PrivacyBudgetExhausted"
"""The exception name that appears in a party's failure text when it refused to overspend."""


class BudgetMonitor:
    """Round hook: per-party epsilon in the log; sets ``coordinator.stop_reason`` near the budget."""

    def __init__(self, config: Config) -> None:
        self.budget = config.privacy.epsilon
        self.log_every = config.output.log_every
        self._started = False
        self._last: dict[str, float] = {}
        """Each party's epsilon after the last round it took part in."""
        self._before_last: dict[str, float] = {}
        self._rounds_taken: dict[str, int] = {}
        self._plans: dict[str, PrivacyPlan] = {}

    def _start(self, coordinator: Coordinator) -> None:
        """Once per session: the rounds already in stats.jsonl (after a resume), and the parties' plans."""
        self._started = True
        if coordinator.stats_path.exists():
            for line in coordinator.stats_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record.get("round", 0) <= coordinator.round:
                    self._update({party: float(stats.get("epsilon", 0.0))
                                  for party, stats in record.get("parties", {}).items()})
        self._make_plans(coordinator)

    def _update(self, spent: dict[str, float]) -> None:
        for party, epsilon in spent.items():
            if party in self._last:
                self._before_last[party] = self._last[party]
            self._last[party] = epsilon
            self._rounds_taken[party] = self._rounds_taken.get(party, 0) + 1

    def _make_plans(self, coordinator: Coordinator) -> None:
        """Each party's mechanism and noise, recomputed from public numbers, and logged."""
        from distgan.privacy.accounting import make_plan
        from distgan.privacy.mechanisms import resolve_mechanism

        config = coordinator.config
        mechanism = resolve_mechanism(config)
        for party, samples in sorted(coordinator.strategy.context.party_sizes.items()):
            self._plans[str(party)] = plan = make_plan(config, mechanism, samples)
            log.info("privacy: party %d: %s", party, plan.describe())

    def _replayed(self, coordinator: Coordinator, party: str, rounds: int) -> float | None:
        """Epsilon of ``rounds`` rounds of ``party`` by its plan (None without a plan)."""
        from distgan.privacy.accounting import (
            RELEASE_ONCE_MECHANISMS,
            PrivacyLedger,
            mechanism_steps_per_round,
        )

        plan = self._plans.get(party)
        if plan is None:
            return None
        samples = coordinator.strategy.context.party_sizes.get(int(party))
        if plan.mechanism in RELEASE_ONCE_MECHANISMS:
            rounds = min(rounds, 1)  # released once: later rounds spend nothing
        steps = rounds * mechanism_steps_per_round(coordinator.config, plan.mechanism, samples)
        return PrivacyLedger(plan).epsilon_after(steps) if steps else 0.0

    def next_round_epsilon(self, coordinator: Coordinator, party: str) -> float | None:
        """What ``party`` will have spent after one more round like its last (None: no estimate)."""
        epsilon, rounds = self._last[party], self._rounds_taken[party]
        replay = self._replayed(coordinator, party, rounds)
        if replay is not None and abs(replay - epsilon) <= 1e-9 * max(1.0, epsilon):
            return self._replayed(coordinator, party, rounds + 1)
        if party in self._before_last:
            return epsilon + (epsilon - self._before_last[party])
        return None

    def _check(self, coordinator: Coordinator, parties: list[str]) -> None:
        refused = [j for j, why in coordinator.parties.failed.items() if EXHAUSTED_MARK in why]
        if refused:
            coordinator.stop_reason = (f"party {refused[0]} refused further work: its privacy budget is used up "
                                       f"({coordinator.parties.failed[refused[0]]})")
            return
        if self.budget is None:
            return
        for party in parties:
            next_round = self.next_round_epsilon(coordinator, party)
            if next_round is not None and next_round > self.budget:
                coordinator.stop_reason = (f"privacy budget of party {party} used up: epsilon "
                                           f"{self._last[party]:.4g} spent of {self.budget:g}; another round would "
                                           f"reach {next_round:.4g}")
                return

    def spent_before_start(self, coordinator: Coordinator) -> bool:
        """Before the first round of a session: is a resumed run's budget already used up?"""
        if not self._started:
            self._start(coordinator)
        if coordinator.round > 0:
            self._check(coordinator, sorted(self._last))
        return coordinator.stop_reason is not None

    def __call__(self, coordinator: Coordinator, round_number: int, record: dict[str, Any]) -> None:
        if not self._started:
            self._start(coordinator)
        spent = {party: float(stats["epsilon"]) for party, stats in record["parties"].items()}
        self._update(spent)
        if round_number % self.log_every == 0 and spent:
            log.info("privacy: epsilon spent %s%s", ", ".join(f"party {j} {e:.3f}" for j, e in spent.items()),
                     "" if self.budget is None else f" (budget {self.budget:g} each)")
        self._check(coordinator, list(spent))

"""A party's privacy plan and ledger, on Opacus's RDP accountant (nothing hand-written here).

The plan fixes, before training, the three numbers of a sampled Gaussian mechanism (Opacus's
vocabulary): ``noise_multiplier`` sigma, ``sample_rate`` q and the number of planned steps, plus
``target_delta``. Given a target epsilon, sigma comes from
:func:`opacus.accountants.utils.get_noise_multiplier` over the planned steps; given an explicit
sigma, epsilon (if any) is only a budget. The ledger is an :class:`opacus.accountants.RDPAccountant`
that the party steps once per mechanism invocation and asks for epsilon spent; it refuses, before
any privacy is spent, a request that would take the party over its budget.

Planned steps: ``train.rounds x local_steps`` mechanism invocations (one privacy-spending message per
party and round; with ``strategy.switch=epoch`` one pass over the party's data, ``ceil(n / batch)``,
instead of ``local_steps``), times
``train.d_steps`` for DP-SGD and the batch size for the gradient sanitizer (see
:mod:`distgan.privacy.mechanisms`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as privacy_analysis
from opacus.accountants.utils import get_noise_multiplier

from distgan.config import Config

RELEASE_ONCE_MECHANISMS = frozenset({"mean-embedding"})
"""Mechanisms a party invokes once per run, whatever the number of rounds (dp-merf's embedding)."""


class PrivacyBudgetExhausted(RuntimeError):
    """A party refused a request because answering it would spend more than its epsilon budget."""


class PlanError(ValueError):
    """No plan for this config; ``public`` says so without the numbers that depend on the party's count."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def default_delta(samples: int) -> float:
    """``min(1e-5, 1/n)``: delta must be well below 1/n, the chance of leaking one record outright."""
    return min(1e-5, 1.0 / samples)


@dataclass(frozen=True)
class PrivacyPlan:
    """One party's mechanism and its parameters, fixed before training."""

    mechanism: str
    """``dp-sgd`` or ``gradient-sanitizer``."""
    noise_multiplier: float
    """sigma: noise standard deviation over the sensitivity of one step."""
    sample_rate: float
    """q: the probability that one record takes part in one step (1 when nothing is subsampled)."""
    target_delta: float
    max_grad_norm: float
    """C, the per-sample clipping bound."""
    epsilon_budget: float | None
    """The run stops before a party would spend more; None: no budget (explicit sigma only)."""
    planned_steps: int
    """Accountant steps the noise was calibrated for (0 when sigma was given)."""
    accountant_steps_per_step: int = 1
    """Accountant steps per mechanism invocation: 1 for DP-SGD, the batch size for the sanitizer."""
    prior: tuple[tuple[float, float, int], ...] = ()
    """Releases the noise was planned around, made before training: the noisy counts of ``Description``."""
    expected_batch: int = 0
    """Opacus's divisor of the noisy gradient sum: the batch size (public), not q times the exact count."""

    def describe(self) -> str:
        budget = "none" if self.epsilon_budget is None else f"{self.epsilon_budget:g}"
        return (f"{self.mechanism}: noise_multiplier={self.noise_multiplier:.4g}, sample_rate={self.sample_rate:.4g}, "
                f"max_grad_norm={self.max_grad_norm:g}, delta={self.target_delta:.3g}, epsilon budget {budget}")


def mechanism_steps_per_round(config: Config, mechanism: str, samples: int | None = None) -> int:
    """Mechanism invocations of one party in one round: D steps (dp-sgd), or feedback batches.
    ``samples``: the party's record count, which sets a visit's steps with ``strategy.switch=epoch``."""
    if mechanism in RELEASE_ONCE_MECHANISMS:
        return 1  # in the one round that releases
    d_steps = config.train.d_steps if mechanism == "dp-sgd" else 1
    if samples is None:
        if config.strategy.switch == "epoch":
            raise ValueError("strategy.switch=epoch: a party's steps per round depend on its sample count")
        samples = 0
    return config.steps_per_visit(samples) * d_steps


def planned_mechanism_steps(config: Config, mechanism: str, samples: int | None = None) -> int:
    """Mechanism invocations one party makes in a full run."""
    if mechanism in RELEASE_ONCE_MECHANISMS:
        return 1
    return config.train.rounds * mechanism_steps_per_round(config, mechanism, samples)


def counts_release(config: Config) -> tuple[float, float, int]:
    """The one Gaussian release of a private party's noisy counts (sensitivity 1 under add/remove-one)."""
    return (config.privacy.count_noise, 1.0, 1)


def make_plan(config: Config, mechanism: str, samples: int) -> PrivacyPlan:
    """The plan of a party that published ``samples`` records (its *noisy* count, the only one public:
    its sample rate and delta depend on it), planned around the release of that count."""
    privacy = config.privacy
    if not privacy.enabled:
        raise ValueError("privacy is off: set privacy.epsilon or privacy.noise_multiplier")
    if samples <= 0:
        raise ValueError(f"a private party needs samples, got {samples}")
    batch = config.train.batch_size
    delta = privacy.delta if privacy.delta is not None else default_delta(samples)
    if mechanism == "dp-sgd":
        sample_rate, per_step = min(1.0, batch / samples), 1
    elif mechanism in RELEASE_ONCE_MECHANISMS:
        sample_rate, per_step = 1.0, 1  # one Gaussian release of the whole data set: no subsampling
    elif mechanism == "gradient-sanitizer":
        # Every record may have shaped D, so no subsampling amplifies a query; each of the B
        # released per-sample gradients is one Gaussian release (GS-WGAN's analysis with one D).
        sample_rate, per_step = 1.0, batch
    else:
        raise ValueError(f"privacy.mechanism={mechanism!r}: unknown mechanism")
    steps = planned_mechanism_steps(config, mechanism, samples) * per_step
    prior = (counts_release(config),)
    if privacy.noise_multiplier is not None:
        sigma, planned = privacy.noise_multiplier, 0
        if privacy.epsilon is not None:
            round_steps = mechanism_steps_per_round(config, mechanism, samples) * per_step
            first_round = RDPAccountant()
            first_round.history = [*prior, (sigma, sample_rate, round_steps)]
            with _quiet_alpha_warning():
                cost = first_round.get_epsilon(delta=delta)
            if cost > privacy.epsilon:
                advice = "raise the noise multiplier or the budget"
                raise PlanError(f"privacy.epsilon={privacy.epsilon}: one round alone costs epsilon {cost:.4g} at "
                                f"noise_multiplier={sigma} (sample rate {sample_rate:.4g}, delta {delta:.3g}); {advice}",
                                f"privacy.epsilon={privacy.epsilon}: one round alone costs more at "
                                f"noise_multiplier={sigma}; {advice}")
    else:
        assert privacy.epsilon is not None
        try:
            sigma = _noise_multiplier(privacy.epsilon, delta, sample_rate, steps, prior)
        except ValueError as error:
            unreachable = f"privacy.epsilon={privacy.epsilon}: no noise multiplier reaches it over {steps} steps"
            raise PlanError(f"{unreachable} at sample rate {sample_rate:.4g} after the noisy counts "
                            f"(privacy.count_noise={privacy.count_noise:g}) ({error})",
                            f"{unreachable} at this party's sample rate") from None
        planned = steps
    return PrivacyPlan(mechanism, float(sigma), sample_rate, delta, privacy.max_grad_norm, privacy.epsilon,
                       planned, per_step, prior, max(1, round(sample_rate * samples)))


@functools.lru_cache(maxsize=64)
def _noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int,
                      prior: tuple[tuple[float, float, int], ...] = ()) -> float:
    """Opacus's search (seconds of CPU), cached: parties of equal size share one answer. With ``prior``
    releases, the same bisection as :func:`opacus.accountants.utils.get_noise_multiplier` (tolerance
    0.01, the answer on the safe side) over the composition of the prior and the planned steps."""
    if not prior:
        with _quiet_alpha_warning():
            return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                              steps=steps, accountant="rdp"))

    def spent(sigma: float) -> float:
        accountant = StepCachedRDPAccountant()
        accountant.history = [*prior, (sigma, sample_rate, steps)]
        with _quiet_alpha_warning():
            return float(accountant.get_epsilon(delta=delta))

    low, high = 0.0, 10.0
    epsilon_high = spent(high)
    while epsilon_high > epsilon:
        high *= 2
        if high > 1e6:
            raise ValueError("the prior releases alone exceed the target")
        epsilon_high = spent(high)
    while epsilon - epsilon_high > 0.01:
        sigma = (low + high) / 2
        value = spent(sigma)
        if value < epsilon:
            high, epsilon_high = sigma, value
        else:
            low = sigma
    return high


@contextlib.contextmanager
def _quiet_alpha_warning() -> Iterator[None]:
    """Opacus warns when the best RDP order is at an end of its range; the bound stays valid, only looser."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


@functools.lru_cache(maxsize=256)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """Opacus's RDP of one sampled Gaussian step at its default orders (a series: ~0.1 s per call)."""
    return tuple(float(value) for value in privacy_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS))


class StepCachedRDPAccountant(RDPAccountant):
    """Opacus's RDP accountant, answering in microseconds: RDP composes additively, so the RDP of
    n identical steps is n times that of one, which is computed once per (noise, rate) and cached."""

    def get_privacy_spent(self, *, delta: float, alphas: list[float | int] | None = None) -> tuple[float, float]:
        if alphas is not None:
            return super().get_privacy_spent(delta=delta, alphas=alphas)
        if not self.history:
            return 0, 0
        rdp = sum(numpy.asarray(_rdp_of_one_step(sigma, rate)) * steps for sigma, rate, steps in self.history)
        eps, best_alpha = privacy_analysis.get_privacy_spent(orders=self.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(eps), float(best_alpha)


class PrivacyLedger:
    """Epsilon spent by one party: an Opacus RDP accountant, checked against the plan's budget."""

    def __init__(self, plan: PrivacyPlan, owner: str = "party",
                 history: list[tuple[float, float, int]] | None = None) -> None:
        """``history``: what the party's journal already holds (every release ever made on its data);
        by default the plan's prior releases, as a replay from public numbers assumes."""
        self.plan = plan
        self.owner = owner
        self.accountant: RDPAccountant = StepCachedRDPAccountant()
        self.accountant.history = list(plan.prior if history is None else history)
        self._recorded = list(self.accountant.history)

    @property
    def steps(self) -> int:
        return sum(count for _, _, count in self.accountant.history)

    @property
    def epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        with _quiet_alpha_warning():
            return float(self.accountant.get_epsilon(delta=self.plan.target_delta))

    def epsilon_after(self, mechanism_steps: int) -> float:
        """Epsilon once ``mechanism_steps`` more invocations are spent (nothing is spent)."""
        probe = StepCachedRDPAccountant()
        probe.history = [*self.accountant.history,
                         (self.plan.noise_multiplier, self.plan.sample_rate,
                          mechanism_steps * self.plan.accountant_steps_per_step)]
        with _quiet_alpha_warning():
            return float(probe.get_epsilon(delta=self.plan.target_delta))

    def check(self, mechanism_steps: int) -> None:
        """Raise :class:`PrivacyBudgetExhausted` if ``mechanism_steps`` more would exceed the budget."""
        budget = self.plan.epsilon_budget
        if budget is None:
            return
        after = self.epsilon_after(mechanism_steps)
        if after > budget:
            raise PrivacyBudgetExhausted(
                f"{self.owner}: privacy budget used up: epsilon {self.epsilon:.4g} spent of {budget:g} "
                f"(delta {self.plan.target_delta:.3g}); {mechanism_steps} more step(s) would reach {after:.4g}")

    def spend(self, mechanism_steps: int) -> None:
        """Record invocations made outside a DPOptimizer (the sanitizer's); DP-SGD steps count via its hook."""
        for _ in range(mechanism_steps * self.plan.accountant_steps_per_step):
            self.accountant.step(noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate)

    def take_unrecorded(self) -> list[tuple[float, float, int]]:
        """The invocations spent since the last call (what the journal must record next). The history
        only grows: Opacus appends a run or lengthens the last one."""
        history, recorded = list(self.accountant.history), self._recorded
        settled = len(recorded) - 1  # entries before the last recorded one can no longer change
        if len(history) < len(recorded) or history[:max(settled, 0)] != recorded[:max(settled, 0)]:
            raise RuntimeError(f"{self.owner}: the privacy ledger was rewritten; refusing to go on")
        new: list[tuple[float, float, int]] = []
        if recorded:
            (sigma, rate, count), (old_sigma, old_rate, old_count) = history[settled], recorded[settled]
            if (sigma, rate) != (old_sigma, old_rate) or count < old_count:
                raise RuntimeError(f"{self.owner}: the privacy ledger was rewritten; refusing to go on")
            if count > old_count:
                new.append((sigma, rate, count - old_count))
        new.extend(history[len(recorded):])
        self._recorded = history
        return new

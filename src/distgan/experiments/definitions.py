"""What an experiment is: the paper's results as presets x variants x budgets, and the runs they plan."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from distgan.config import Config
from distgan.presets import PRESETS
from distgan.registry import Registry

SCALES = ("quick", "paper")
DEFAULT_SEEDS = 3


# -- budgets ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """How long one run trains, at one scale: exactly one of ``rounds``, ``generator_steps``,
    ``wall_time_s`` or ``cfid_target``; the last two stop at ``max_rounds`` at the latest."""

    rounds: int | None = None
    """A fixed number of rounds."""
    generator_steps: int | None = None
    """A fixed number of generator optimizer steps (rounds = steps / the strategy's G steps per round)."""
    wall_time_s: float | None = None
    """Train until the coordinator's training time (evaluation excluded) reaches this many seconds."""
    cfid_target: float | None = None
    """Train until the cfid measured every ``eval_every`` rounds is at most this."""
    max_rounds: int | None = None
    """Upper bound on rounds for the wall-time and cfid-target budgets."""
    eval_every: int | None = None
    """Rounds between cfid measurements during training (cfid-target budgets)."""

    def __post_init__(self) -> None:
        chosen = [name for name in ("rounds", "generator_steps", "wall_time_s", "cfid_target")
                  if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a budget sets exactly one of rounds, generator_steps, wall_time_s, cfid_target; "
                             f"got {chosen or 'none'}")
        if (self.wall_time_s is not None or self.cfid_target is not None) and self.max_rounds is None:
            raise ValueError("wall-time and cfid-target budgets need max_rounds (a run must end)")
        if self.cfid_target is not None and self.eval_every is None:
            raise ValueError("a cfid-target budget needs eval_every (rounds between cfid measurements)")

    def describe(self) -> str:
        if self.rounds is not None:
            return f"{self.rounds} rounds"
        if self.generator_steps is not None:
            return f"{self.generator_steps} generator steps"
        if self.wall_time_s is not None:
            return f"{self.wall_time_s:g} s of training (at most {self.max_rounds} rounds)"
        return (f"until cfid <= {self.cfid_target:g}, measured every {self.eval_every} rounds "
                f"(at most {self.max_rounds} rounds)")


@dataclass(frozen=True)
class Budget:
    name: str
    quick: Limits
    paper: Limits

    def at(self, scale: str) -> Limits:
        if scale not in SCALES:
            raise ValueError(f"scale {scale!r}: must be one of {', '.join(SCALES)}")
        return self.quick if scale == "quick" else self.paper


def generator_steps_per_round(config: Config) -> int:
    """G optimizer steps one round takes: round-robin steps once per party, every other strategy once
    per round (fedgan and local-only: each party's local G, averaged or not), ``local_steps`` each."""
    parties = 1 if config.strategy.name == "centralized" else config.data.parties
    per_round = parties if config.strategy.name == "round-robin" else 1
    if config.strategy.name == "round-robin" and config.train.parties_per_round is not None:
        per_round = config.train.parties_per_round
    return per_round * config.train.local_steps


# -- experiments ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    label: str
    """Short name, used in tables and run folder names."""
    overrides: tuple[str, ...] = ()
    """``section.field=value`` applied to the experiment's preset."""


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    claim: str
    """The paper's claim this experiment tests, in one sentence."""
    variants: tuple[Variant, ...]
    budgets: tuple[Budget, ...]
    time_to_target: bool = False
    """Add the table of wall time to the cfid target and speed-up vs the ``centralized`` variant."""


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def register(experiment: Experiment, summary: str) -> None:
    PRESETS.get(experiment.preset)  # an experiment always names an existing preset
    EXPERIMENTS.register(experiment.name, summary)(experiment)


def _rounds(quick: int, paper: int = 3000) -> Budget:
    return Budget("rounds", Limits(rounds=quick), Limits(rounds=paper))


register(Experiment("fig2", "fig2", "server-d trains one generator on two iid halves of MNIST (Fig. 2)",
                    (Variant("server-d iid/2"),), (_rounds(1500),)),
         "server-d on two iid halves of MNIST")
register(Experiment("fig3", "fig3", "avg-output generates every digit when each of 10 parties holds one (Fig. 3)",
                    (Variant("avg-output one-label/10"),), (_rounds(600),)),
         "avg-output, one digit per party, 10 parties")
register(Experiment("fig4-5", "fig4-5", "avg-output works for similar domains (6 | 8) but not for distant ones "
                                        "(4 | 7): 7 disappears (Figs. 4-5)",
                    (Variant("6|8", ("data.split=labels:6/8",)), Variant("4|7", ("data.split=labels:4/7",))),
                    (_rounds(1500),)),
         "avg-output on digits 6|8 vs 4|7")
register(Experiment("fig6", "fig6", "round-robin generates all ten digits when parties hold 0-4 and 5-9 (Fig. 6)",
                    (Variant("round-robin 0-4|5-9"),), (_rounds(1500),)),
         "round-robin on digits 0-4|5-9")
register(Experiment("fig7", "fig7", "round-robin generates both digits when parties hold 6 and 9 (Fig. 7)",
                    (Variant("round-robin 6|9"),), (_rounds(1500),)),
         "round-robin on digits 6|9")
register(Experiment("fig8-10", "fig8-10", "the generator loss of all three strategies trends down (Figs. 8-10)",
                    (Variant("server-d iid/2", ("strategy.name=server-d", "data.split=iid")),
                     Variant("avg-output 6|8", ("strategy.name=avg-output", "data.split=labels:6/8")),
                     Variant("round-robin 0-4|5-9")),
                    (_rounds(1000),)),
         "loss curves of the three strategies")
_TO_TARGET = Budget("to-cfid-target", Limits(cfid_target=60.0, max_rounds=3000, eval_every=100),
                    Limits(cfid_target=25.0, max_rounds=20000, eval_every=250))
register(Experiment("fig14", "fig14", "distributed training takes less time than the normal GAN (Fig. 14)",
                    # The normal GAN in one ordinary process; the parties of the others in worker processes.
                    (Variant("centralized", ("strategy.name=centralized", "runtime.workers=0")),
                     Variant("round-robin"),
                     Variant("avg-output", ("strategy.name=avg-output",)),
                     Variant("server-d", ("strategy.name=server-d",))),
                    (_TO_TARGET,), time_to_target=True),
         "wall time to a cfid target, each strategy (parties in worker processes) vs centralized")
register(Experiment("fig22", "fig22", "both strategies scale to 5 parties (Fig. 22)",
                    (Variant("server-d iid/5"),
                     Variant("round-robin 2 labels/5", ("strategy.name=round-robin",
                                                        "data.split=labels:0-1/2-3/4-5/6-7/8-9"))),
                    (_rounds(600),)),
         "5 parties: server-d on iid fifths, round-robin with two digits each")

BASELINE_STRATEGIES = ("centralized", "round-robin", "avg-output", "server-d", "md-gan", "fedgan", "local-only")
BASELINE_SPLITS = (("0-4|5-9", ("data.split=labels:0-4/5-9", "data.parties=2")),
                   ("dir0.3/5", ("data.split=dirichlet:0.3", "data.parties=5")))
register(Experiment(
    "baselines", "baselines",
    "the paper's strategies against the literature's baselines (centralized, local-only, FedGAN, MD-GAN)",
    tuple(Variant(f"{strategy} {split}", (f"strategy.name={strategy}", *overrides))
          for split, overrides in BASELINE_SPLITS for strategy in BASELINE_STRATEGIES),
    (Budget("equal-steps", Limits(generator_steps=1500), Limits(generator_steps=6000)),
     Budget("equal-time", Limits(wall_time_s=60.0, max_rounds=5000), Limits(wall_time_s=600.0, max_rounds=100000)))),
    "every strategy and baseline on 0-4|5-9 (2 parties) and dirichlet:0.3 (5 parties), equal steps and equal time")


# -- planning -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    experiment: str
    variant: str
    budget: str
    seed: int
    config: Config
    limits: Limits

    @property
    def name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{self.variant}--{self.budget}").strip("_")
        return f"{slug}--seed{self.seed}"


def plan_runs(experiment: Experiment, seeds: Sequence[int], scale: str,
              overrides: Sequence[str] = ()) -> list[RunSpec]:
    """Every run of ``experiment``: variant x budget x seed, each a full config. ``overrides``
    (``section.field=value``) apply to every run, after the variant's own."""
    specs = []
    for budget in experiment.budgets:
        limits = budget.at(scale)
        for variant in experiment.variants:
            for seed in seeds:
                config = PRESETS.get(experiment.preset)()
                config = config.with_overrides([*variant.overrides, *overrides, f"runtime.seed={seed}"])
                apply_limits(config, limits, scale)
                specs.append(RunSpec(experiment.name, variant.label, budget.name, seed, config, limits))
    return specs


def apply_limits(config: Config, limits: Limits, scale: str) -> None:
    """Set the run length (and, for short runs, the output intervals) from a budget."""
    if limits.rounds is not None:
        config.train.rounds = limits.rounds
    elif limits.generator_steps is not None:
        config.train.rounds = max(1, math.ceil(limits.generator_steps / generator_steps_per_round(config)))
    else:
        assert limits.max_rounds is not None
        config.train.rounds = limits.max_rounds
    if limits.cfid_target is not None:
        assert limits.eval_every is not None
        config.output.eval_every = limits.eval_every
    if scale == "quick":
        # Short runs: a handful of sample grids and progress lines, one checkpoint at the end.
        rounds = config.train.rounds
        config.output.sample_every = max(1, rounds // 4)
        config.output.checkpoint_every = rounds
        config.output.log_every = max(1, rounds // 10)
        if limits.cfid_target is None:
            config.output.eval_every = max(config.output.eval_every, rounds)

"""What an experiment is: the paper's results as presets x variants x budgets, and the runs they plan."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from distgan.config import Config
from distgan.presets import FASHION_ROUNDS, PRESETS
from distgan.registry import Registry

SCALES = ("quick", "paper")
DEFAULT_SEEDS = 5
"""Five seeds: with fewer, a 95 % t-interval is too wide to separate most of the paper's claims."""


# -- budgets ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """How long one run trains, at one scale: exactly one of ``rounds``, ``generator_steps``,
    ``wall_time_s`` or ``target``; the last two stop after ``max_generator_steps`` at the latest.
    Caps and measurement intervals count generator optimizer steps, not rounds: a round of per-epoch
    round-robin is dozens of G steps, a round of per-batch round-robin two, of centralized one."""

    rounds: int | None = None
    """A fixed number of rounds."""
    generator_steps: int | None = None
    """A fixed number of generator optimizer steps (rounds = steps / the strategy's G steps per round)."""
    wall_time_s: float | None = None
    """Train until the coordinator's training time (evaluation excluded) reaches this many seconds."""
    target: float | None = None
    """Train until ``target_metric``, measured every ``eval_every_steps`` G steps, is at most this."""
    target_metric: str = "cfid"
    """The quality metric of a target budget: a cheap, lower-is-better metric of the run's defaults
    (``cfid`` or ``fd-sharp``), measured during training."""
    max_generator_steps: int | None = None
    """Upper bound, in G steps, on the wall-time and target budgets."""
    eval_every_steps: int | None = None
    """G steps between measurements of the target metric during training (target budgets)."""

    def __post_init__(self) -> None:
        chosen = [name for name in ("rounds", "generator_steps", "wall_time_s", "target")
                  if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a budget sets exactly one of rounds, generator_steps, wall_time_s, target; "
                             f"got {chosen or 'none'}")
        if (self.wall_time_s is not None or self.target is not None) and self.max_generator_steps is None:
            raise ValueError("wall-time and target budgets need max_generator_steps (a run must end)")
        if self.target is not None and self.eval_every_steps is None:
            raise ValueError(f"a {self.target_metric}-target budget needs eval_every_steps (G steps between "
                             f"{self.target_metric} measurements)")

    def describe(self) -> str:
        if self.rounds is not None:
            return f"{self.rounds} rounds"
        if self.generator_steps is not None:
            return f"{self.generator_steps} generator steps"
        if self.wall_time_s is not None:
            return f"{self.wall_time_s:g} s of training (at most {self.max_generator_steps} generator steps)"
        return (f"until {self.target_metric} <= {self.target:g}, measured every {self.eval_every_steps} "
                f"generator steps (at most {self.max_generator_steps})")


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
    """G optimizer steps one round takes, as the strategy class states it."""
    from distgan.strategies import STRATEGIES

    return STRATEGIES.get(config.strategy.name).generator_steps_per_round(config)


# -- experiments ----------------------------------------------------------------------------------------
TRANSPORTS = ("local", "flower-simulation")


@dataclass(frozen=True)
class Variant:
    label: str
    """Short name, used in tables and run folder names."""
    overrides: tuple[str, ...] = ()
    """``section.field=value`` applied to the experiment's preset."""
    transport: str = "local"
    """How the parties are reached (:data:`TRANSPORTS`): ``local`` as ``distgan train`` does (in this
    process, or in worker processes with ``runtime.workers``), or ``flower-simulation``: Flower's
    simulation engine, one virtual SuperNode per party (``distgan flower simulate``)."""

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"variant {self.label!r}: transport {self.transport!r} must be one of "
                             f"{', '.join(TRANSPORTS)}")


# -- the two columns of every figure: the paper's model and algorithm, and distgan's defaults --------------
PAPER_ALGORITHMS: dict[str, tuple[str, ...]] = {
    # Alg. 3 switches party once per epoch: G travels to each party for a pass over its data.
    "round-robin": ("strategy.switch=epoch",),
    # Alg. 1 has no download step and its server keeps the biggest delta.
    "server-d": ("strategy.download_fraction=none", "strategy.server_update=max"),
    # FedGAN (Rasouli et al. 2020) weights parties by data share and synchronises every K >= 20 steps.
    "fedgan": ("strategy.weighted=true", "train.local_steps=20"),
    # MD-GAN (Hardy et al. 2019) swaps discriminators once per local epoch.
    "md-gan": ("strategy.swap_per_epoch=true",),
}
"""Per strategy, the overrides that make it the algorithm as its paper states it (avg-output: distgan's
per-batch loop is the paper's Alg. 2 at ``local_steps=1``)."""

SETTINGS = ("paper", "distgan")
"""``paper``: the paper's model and training settings (the ``paper-mlp`` preset: Tables 1-2's MLP,
batch 100, Adam 2e-4, the raw G) and the algorithm as its paper states it (:data:`PAPER_ALGORITHMS`);
``distgan``: the preset as it is (the tuned model, distgan's defaults)."""


def paper_overrides(strategy: str) -> tuple[str, ...]:
    """The ``paper`` setting's overrides for a run of ``strategy``: paper-mlp's model and train
    settings (as the preset states them), then the strategy's paper algorithm."""
    from distgan.presets import STATED

    model_and_train = tuple(f"{path}={'none' if value is None else value}"
                            for path, value in STATED["paper-mlp"].items()
                            if path.startswith(("model.", "train.")))
    return (*model_and_train, *PAPER_ALGORITHMS.get(strategy, ()))


@dataclass(frozen=True)
class Experiment:
    name: str
    preset: str
    claim: str
    """The paper's claim this experiment tests, in one sentence."""
    variants: tuple[Variant, ...]
    budgets: tuple[Budget, ...]
    time_to_target: bool = False
    """Add the table of wall time to the quality target and speed-up vs the ``centralized`` variant."""
    settings: tuple[str, ...] = SETTINGS
    """Which columns to run (:data:`SETTINGS`): the figures run both; ablations of distgan's own
    choices and timing experiments run ``distgan`` only."""


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
# The sharp metric (it sees noise and blur; docs/EVALUATION.md). Quick: fd-sharp 100 is about where the
# quick figures' 1,500-step runs end (Fig. 2: 97); on real test digits noise sd 0.3 scores 29, blur
# 0.5 px 38, half the classes missing 208. Paper: 50, between those two corruptions and 100.
_TO_TARGET = Budget("to-fd-sharp-target",
                    Limits(target=100.0, target_metric="fd-sharp", max_generator_steps=6000, eval_every_steps=100),
                    Limits(target=50.0, target_metric="fd-sharp", max_generator_steps=40000, eval_every_steps=250))
register(Experiment("fig14", "fig14", "distributed training takes less time than the normal GAN (Fig. 14)",
                    # The normal GAN in one ordinary process; the parties of the others in worker processes.
                    (Variant("centralized", ("strategy.name=centralized", "runtime.workers=0")),
                     Variant("round-robin"),
                     Variant("round-robin per epoch (Alg. 3)", ("strategy.switch=epoch",)),
                     Variant("avg-output", ("strategy.name=avg-output",)),
                     Variant("avg-output on Flower simulation", ("strategy.name=avg-output", "runtime.workers=0"),
                             transport="flower-simulation"),
                     Variant("server-d", ("strategy.name=server-d",))),
                    (_TO_TARGET,), time_to_target=True, settings=("distgan",)),
         "wall time to an fd-sharp target, each strategy (parties in worker processes) vs centralized")
register(Experiment("fig22", "fig22", "both strategies scale to 5 parties (Fig. 22)",
                    # Section 5.7: the first method on pieces of the data, the third with one label per user
                    # (so 5 of the 10 digits); the two-label variant is ours, to cover all ten.
                    (Variant("server-d iid/5"),
                     Variant("round-robin 1 label/5 (5.7)", ("strategy.name=round-robin", "data.split=one-label")),
                     Variant("round-robin 2 labels/5", ("strategy.name=round-robin",
                                                        "data.split=labels:0-1/2-3/4-5/6-7/8-9"))),
                    (_rounds(600),)),
         "5 parties: server-d on iid fifths, round-robin with one digit each (the paper's) and two each")


def in_generator_steps(limits: Limits, distgans: Config) -> Limits:
    """A budget in rounds counts rounds of distgan's setting; the paper setting trains as many G steps.
    A round of the paper's per-epoch round-robin (Alg. 3) is a pass over every party's data (40 G steps
    on the bundled MNIST's 0-4 | 5-9 against distgan's 2), so equal rounds would give it 20x the training."""
    if limits.rounds is None:
        return limits
    return replace(limits, rounds=None, generator_steps=limits.rounds * generator_steps_per_round(distgans))


# -- the same figures on Fashion-MNIST: does a claim hold beyond digits? ---------------------------------------
FASHION_QUICK_ROUNDS = 2000
"""The fashion preset's run first made all 10 classes at round 2,000 (cfid 21.6; 20.8 at 3,000, README):
like the MNIST figures' quick scale, recognisable images of every kind, not finished models."""


def on_fashion(mnist: Experiment, claim: str) -> Experiment:
    """``mnist``'s twin on the fashion preset's data (Fashion-MNIST's 60,000 train / 10,000 test images):
    the same preset, strategies, label splits (the numbers now name garment classes) and settings.

    Its budget counts generator steps: as many as distgan's setting takes in the fashion preset's rounds
    (:data:`FASHION_QUICK_ROUNDS` quick, :data:`~distgan.presets.FASHION_ROUNDS` paper). In rounds, the
    paper setting's per-epoch round-robin (Alg. 3: a round is a pass over every party's data, 600 G steps
    on Fashion's two 30,000-image shares against 40 on the bundled MNIST's) would train 1.2 million G
    steps at quick scale; in steps it trains as many as distgan's setting."""
    source = f"data.source={PRESETS.get('fashion')().data.source}"
    variants = tuple(Variant(v.label, (source, *v.overrides)) for v in mnist.variants)
    base = PRESETS.get(mnist.preset)()
    per_round = {generator_steps_per_round(base.with_overrides(list(v.overrides))) for v in variants}
    if len(per_round) != 1:
        raise ValueError(f"{mnist.name}'s variants take different G steps per round ({sorted(per_round)}): "
                         "one budget in steps cannot stand for the fashion preset's rounds")
    distgans = base.with_overrides(list(variants[0].overrides))
    budget = Budget("steps", in_generator_steps(Limits(rounds=FASHION_QUICK_ROUNDS), distgans),
                    in_generator_steps(Limits(rounds=FASHION_ROUNDS), distgans))
    return replace(mnist, name=f"{mnist.name}-fashion", claim=claim, variants=variants, budgets=(budget,))


def register_on_fashion(mnist_name: str, claim: str, summary: str) -> None:
    """Register the twin of the MNIST experiment ``mnist_name``; its lengths are added to ``summary``."""
    twin = on_fashion(EXPERIMENTS.get(mnist_name), claim)
    [budget] = twin.budgets
    register(twin, f"{summary}; {budget.quick.generator_steps:,} / {budget.paper.generator_steps:,} G steps "
                   f"quick / paper ({FASHION_QUICK_ROUNDS:,} / {FASHION_ROUNDS:,} rounds of distgan's setting)")


register_on_fashion("fig2", "server-d trains one generator on two iid halves of Fashion-MNIST",
                    "fig2 on Fashion-MNIST: server-d on two iid halves")
register_on_fashion("fig4-5", "avg-output on Fashion-MNIST: does a similar pair (6 | 8, shirt | bag) work and a "
                              "distant one (4 | 7, coat | sneaker) lose a class?",
                    "fig4-5 on Fashion-MNIST: avg-output on classes 6|8 (shirt|bag) vs 4|7 (coat|sneaker)")
register_on_fashion("fig6", "round-robin generates all ten Fashion-MNIST classes when parties hold 0-4 "
                            "(T-shirt/top ... coat) and 5-9 (sandal ... ankle boot)",
                    "fig6 on Fashion-MNIST: round-robin on classes 0-4 (T-shirt/top..coat) | 5-9 (sandal..ankle boot)")

# -- ablations: one of distgan's departures from the paper at a time, on its figure's split -------------------
register(Experiment("ablation-download", "fig2",
                    "server-d needs the download step the paper's Alg. 1 lacks (theta_d in {0, theta_u, 1})",
                    (Variant("theta_d=0 (Alg. 1)", ("strategy.download_fraction=none",)),
                     Variant("theta_d=theta_u=0.1", ("strategy.download_fraction=0.1",)),
                     Variant("theta_d=1 (default)", ("strategy.download_fraction=1.0",))),
                    (_rounds(1500),), settings=("distgan",)),
         "server-d download fraction: none (the paper), theta_u, all (distgan's default)")
register(Experiment("ablation-server-rule", "fig2",
                    "how the server combines uploads: biggest delta (the paper), mean, or sum (Shokri & Shmatikov)",
                    tuple(Variant(rule, (f"strategy.server_update={rule}",)) for rule in ("max", "mean", "sum")),
                    (_rounds(1500),), settings=("distgan",)),
         "server-d server rule: max, mean, sum")
register(Experiment("ablation-switch", "fig6",
                    "round-robin switching party every batch (distgan's default) vs every epoch (Alg. 3, G travels)",
                    (Variant("per batch", ("strategy.switch=batch",)), Variant("per epoch (Alg. 3)", ("strategy.switch=epoch",))),
                    (Budget("equal-steps", Limits(generator_steps=3000), Limits(generator_steps=10000)),),
                    settings=("distgan",)),
         "round-robin 0-4|5-9: party switched per batch vs per epoch, at equal generator steps")
register(Experiment("ablation-tricks", "fig6",
                    "what each of distgan's model choices adds on round-robin 0-4|5-9 (all on vs one off)",
                    (Variant("all on (default)"),
                     Variant("no logit bound", ("model.d_logit_bound=none",)),
                     Variant("no D dropout", ("model.d_dropout=0",)),
                     Variant("no G average", ("train.g_average=none",))),
                    (_rounds(1500),), settings=("distgan",)),
         "round-robin 0-4|5-9 with the logit bound, D dropout and G average each switched off")

BASELINE_STRATEGIES = ("centralized", "round-robin", "avg-output", "server-d", "md-gan", "fedgan", "local-only")
BASELINE_SPLITS = (("0-4|5-9", ("data.split=labels:0-4/5-9", "data.parties=2")),
                   ("dir0.3/5", ("data.split=dirichlet:0.3", "data.parties=5")))
register(Experiment(
    "baselines", "baselines",
    "the paper's strategies against the literature's baselines (centralized, local-only, FedGAN, MD-GAN)",
    tuple(Variant(f"{strategy} {split}", (f"strategy.name={strategy}", *overrides))
          for split, overrides in BASELINE_SPLITS for strategy in BASELINE_STRATEGIES),
    (Budget("equal-steps", Limits(generator_steps=1500), Limits(generator_steps=6000)),
     Budget("equal-time", Limits(wall_time_s=60.0, max_generator_steps=5000),
            Limits(wall_time_s=600.0, max_generator_steps=100000)))),
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
    transport: str = "local"
    """The variant's :attr:`Variant.transport`."""

    @property
    def name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{self.variant}--{self.budget}").strip("_")
        return f"{slug}--seed{self.seed}"


def variant_labels(experiment: Experiment) -> list[str]:
    """The labels of the experiment's variants in tables, run folders and ``--only``: one per variant and
    setting (``LABEL [paper]``, ``LABEL [distgan]``), or the bare label where it runs one setting."""
    return [run_label(experiment, variant, setting) for variant in experiment.variants
            for setting in experiment.settings]


def run_label(experiment: Experiment, variant: Variant, setting: str) -> str:
    return variant.label if len(experiment.settings) == 1 else f"{variant.label} [{setting}]"


def plan_runs(experiment: Experiment, seeds: Sequence[int], scale: str,
              overrides: Sequence[str] = (), only: Sequence[str] = ()) -> list[RunSpec]:
    """Every run of ``experiment``: budget x variant x setting x seed, each a full config. The variant's
    overrides apply first, then the setting's (``paper``), then ``overrides`` (``section.field=value``,
    e.g. ``--set``), then the seed. ``only``: keep the variants whose label contains any of these texts
    (before their configs are built, so an override that suits only them is not checked against the rest)."""
    specs = []
    for budget in experiment.budgets:
        limits = budget.at(scale)
        for variant in experiment.variants:
            for setting in experiment.settings:
                label = run_label(experiment, variant, setting)
                if only and not any(text in label for text in only):
                    continue
                for seed in seeds:
                    last = [*overrides, f"runtime.seed={seed}"]
                    preset = PRESETS.get(experiment.preset)
                    distgans = preset().with_overrides([*variant.overrides, *last])
                    if setting == "paper":
                        config = preset().with_overrides(
                            [*variant.overrides, *paper_overrides(distgans.strategy.name), *last])
                        run_limits = in_generator_steps(limits, distgans)
                    else:
                        config, run_limits = distgans, limits
                    apply_limits(config, run_limits, scale)
                    specs.append(RunSpec(experiment.name, label, budget.name, seed, config, run_limits,
                                         variant.transport))
    return specs


def apply_limits(config: Config, limits: Limits, scale: str) -> None:
    """Set the run length (and, for short runs, the output intervals) from a budget."""
    if limits.rounds is not None:
        config.train.rounds = limits.rounds
    elif limits.generator_steps is not None:
        config.train.rounds = max(1, math.ceil(limits.generator_steps / generator_steps_per_round(config)))
    else:
        assert limits.max_generator_steps is not None
        config.train.rounds = max(1, math.ceil(limits.max_generator_steps / generator_steps_per_round(config)))
    if limits.target is not None:
        assert limits.eval_every_steps is not None
        config.output.eval_every = max(1, round(limits.eval_every_steps / generator_steps_per_round(config)))
    if scale == "quick":
        # Short runs: a handful of sample grids and progress lines, one checkpoint at the end.
        rounds = config.train.rounds
        config.output.sample_every = max(1, rounds // 4)
        config.output.checkpoint_every = rounds
        config.output.log_every = max(1, rounds // 10)
        if limits.target is None:
            config.output.eval_every = max(config.output.eval_every, rounds)

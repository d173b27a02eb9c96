"""Presets and experiments: every preset trains on fake data; an experiment's summary has one row per
run and the table the issue asks for; budgets end runs as they say."""

from __future__ import annotations

import json
import re

import pytest

from distgan.cli import main
from distgan.config import Config
from distgan.data.sources import FASHION_MNIST_DIR
from distgan.experiments import (
    COLUMNS,
    EXPERIMENTS,
    FASHION_QUICK_ROUNDS,
    METRIC_COLUMNS,
    SCALES,
    TABLE_COLUMNS,
    Budget,
    Experiment,
    Limits,
    RunSpec,
    Variant,
    apply_limits,
    generator_steps_per_round,
    markdown_table,
    mean_interval,
    mean_std,
    plan_runs,
    run_set,
)
from distgan.metrics import default_metrics
from distgan.metrics.domains import DOMAINS
from distgan.metrics.reference import DIGIT_SHAPE
from distgan.models import natural_image_size
from distgan.presets import FASHION_ROUNDS, PRESETS
from distgan.training import train
from tests.conftest import needs_fashion

SHARP_METRICS = ("fd-sharp", "precision", "recall")


def on_fake_data(config: Config, rounds: int = 2) -> Config:
    """The preset as it is, on fake data of the same kind (labels 0-9; 64 px colour for the DCGAN
    presets), with small networks so that a run takes a moment. Parties run in this process (fig14
    asks for worker processes; test_runs.py shows they give the same numbers, at seconds of start-up)."""
    size = natural_image_size(config.model) or 28
    channels = 3 if config.model.name == "dcgan" else 1
    return config.with_overrides([
        f"data.source=fake:n=200,channels={channels},size={size},classes=10", f"train.rounds={rounds}",
        "train.batch_size=8", "model.hidden=32", "model.latent_dim=16", "model.channels=4",
        "output.sample_every=1000", "output.checkpoint_every=1000", "output.log_every=1000", "output.eval_every=1000",
        "runtime.workers=0"])


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_runs_two_rounds_on_fake_data(tmp_path, name):
    config = on_fake_data(PRESETS.get(name)())
    train(config, tmp_path, quiet=True)
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2]
    expected_parties = 1 if config.strategy.name == "centralized" else config.data.parties
    # dp-merf asks its parties once, in round 1; its later rounds train G alone
    answered = records[0] if config.strategy.name == "dp-merf" else records[-1]
    assert len(answered["parties"]) == expected_parties


@pytest.mark.parametrize("scale", SCALES)
def test_every_experiment_plans_valid_runs(scale):
    # On digits a run's default metrics include the sharp ones, so every run that keeps the defaults records them.
    assert set(SHARP_METRICS) <= set(default_metrics(DIGIT_SHAPE, "digits"))
    for name in EXPERIMENTS.names():
        if name.endswith("-fashion") and not FASHION_MNIST_DIR.is_dir():
            continue  # a per-epoch round's G steps (the budget is in steps) depend on the data's size
        experiment = EXPERIMENTS.get(name)
        specs = plan_runs(experiment, [0, 1, 2], scale)
        assert len(specs) == 3 * len(experiment.variants) * len(experiment.budgets) * len(experiment.settings)
        assert len({spec.name for spec in specs}) == len(specs), "run folder names must be unique"
        assert {spec.seed for spec in specs} == {0, 1, 2}
        assert all(spec.config.output.metrics is None for spec in specs), "a run must keep its domain's defaults"


FASHION_TWINS = {"fig2-fashion": "fig2", "fig4-5-fashion": "fig4-5", "fig6-fashion": "fig6"}


def without_data_source_and_length(config: Config) -> dict[str, object]:
    settings = config.to_dict()
    del settings["data"]["source"], settings["train"]["rounds"], settings["output"]  # output follows the length
    return settings


@needs_fashion
@pytest.mark.parametrize("scale", SCALES)
def test_fashion_twins_run_their_mnist_figure_on_fashion_mnist(scale):
    distgan_rounds = FASHION_QUICK_ROUNDS if scale == "quick" else FASHION_ROUNDS
    for twin, mnist in FASHION_TWINS.items():
        fashion, digits = plan_runs(EXPERIMENTS.get(twin), [0], scale), plan_runs(EXPERIMENTS.get(mnist), [0], scale)
        assert [s.variant for s in fashion] == [s.variant for s in digits]
        for ours, theirs in zip(fashion, digits):
            assert (ours.config.data.source, theirs.config.data.source) == ("fashion-mnist", "mnist")
            # the same strategy, split, parties, model, training settings and seed
            assert without_data_source_and_length(ours.config) == without_data_source_and_length(theirs.config)
        [budget] = EXPERIMENTS.get(twin).budgets
        steps = budget.at(scale).generator_steps
        for spec in fashion:
            per_round = generator_steps_per_round(spec.config)
            if spec.variant.endswith("[distgan]"):  # the fashion preset's length
                assert spec.config.train.rounds == distgan_rounds and spec.config.train.rounds * per_round == steps
            else:  # the paper's per-epoch round-robin: whole epochs, as many G steps
                assert steps <= spec.config.train.rounds * per_round < steps + per_round


def test_fashion_summaries_name_the_classes_their_labels_are():
    classes = [name.lower() for name in DOMAINS.get("fashion").class_names]
    pairs = EXPERIMENTS.summary("fig4-5-fashion").lower()
    assert f"6|8 ({classes[6]}|{classes[8]})" in pairs and f"4|7 ({classes[4]}|{classes[7]})" in pairs
    halves = EXPERIMENTS.summary("fig6-fashion").lower()
    assert f"0-4 ({classes[0]}..{classes[4]}) | 5-9 ({classes[5]}..{classes[9]})" in halves


def test_baselines_cover_every_strategy_on_both_splits_with_equal_steps():
    specs = [s for s in plan_runs(EXPERIMENTS.get("baselines"), [0], "quick") if s.variant.endswith("[distgan]")]
    strategies = {(s.config.strategy.name, s.config.data.split) for s in specs}
    assert {name for name, _ in strategies} == {"centralized", "round-robin", "avg-output", "server-d", "md-gan",
                                               "fedgan", "local-only"}
    assert {split for _, split in strategies} == {"labels:0-4/5-9", "dirichlet:0.3"}
    equal_steps = [s for s in specs if s.budget == "equal-steps"]
    steps = {s.config.train.rounds * generator_steps_per_round(s.config) for s in equal_steps}
    assert steps == {1500}  # round-robin takes one G step per party and round: fewer rounds
    five = next(s for s in equal_steps if s.config.strategy.name == "round-robin" and s.config.data.parties == 5)
    assert five.config.train.rounds == 300


def tiny(strategy: str = "round-robin") -> Config:
    return on_fake_data(Config(), rounds=4).with_overrides([f"strategy.name={strategy}", "data.split=iid"])


def fake_metrics(run_dir):
    """Stand-in for the MNIST metrics where a test checks only the bookkeeping of the harness."""
    return {"cfid": 10.0, "coverage": 10.0, "party_coverage": 1.0, "tstr": 0.5}


def test_run_set_writes_one_row_per_run_and_the_table(tmp_path):
    budget = Budget("rounds", Limits(rounds=3), Limits(rounds=3))
    experiment = Experiment("test", "default", "a test", (Variant("rr"), Variant("avg", ("strategy.name=avg-output",))),
                            (budget,))
    specs = []
    for variant in experiment.variants:
        for seed in (0, 1):
            config = tiny().with_overrides([*variant.overrides, f"runtime.seed={seed}"])
            apply_limits(config, budget.quick, "quick")
            specs.append(RunSpec("test", variant.label, budget.name, seed, config, budget.quick))
    rows = run_set(specs, tmp_path, evaluate=fake_metrics)
    summary = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert len(summary) == len(rows) == 4
    assert {(r["variant"], r["seed"]) for r in summary} == {("rr", 0), ("rr", 1), ("avg", 0), ("avg", 1)}
    assert all(r["rounds"] == 3 and r["wall_time_s"] > 0 for r in summary)
    table = (tmp_path / "table.md").read_text().splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert set(TABLE_COLUMNS) <= set(header)
    assert len(table) == 2 + 2  # header, rule, one line per variant
    assert "10.0 [10.0, 10.0]" in table[2]
    assert "rr" in (tmp_path / "report.html").read_text()  # the comparison report, first seed of each variant
    # A second call reuses the finished runs instead of training them again.
    stamp = (tmp_path / "runs" / specs[0].name / "stats.jsonl").stat().st_mtime_ns
    run_set(specs, tmp_path, evaluate=fake_metrics)
    assert (tmp_path / "runs" / specs[0].name / "stats.jsonl").stat().st_mtime_ns == stamp


def test_parallel_jobs_train_the_same_runs_as_one_job(tmp_path):
    specs = []
    for seed in (0, 1):
        config = tiny().with_overrides([f"runtime.seed={seed}"])
        apply_limits(config, Limits(rounds=3), "quick")
        specs.append(RunSpec("test", "rr", "rounds", seed, config, Limits(rounds=3)))
    parallel = run_set(specs, tmp_path / "parallel", evaluate=fake_metrics, jobs=2)
    sequential = run_set(specs, tmp_path / "sequential", evaluate=fake_metrics)
    assert [row["run_dir"] for row in parallel] == [row["run_dir"] for row in sequential]  # the specs' order
    for spec in specs:  # seeded runs: each process trains exactly what one process would
        lines = [(tmp_path / where / "runs" / spec.name / "stats.jsonl").read_text().splitlines()
                 for where in ("parallel", "sequential")]
        assert [json.loads(line)["g_loss"] for line in lines[0]] == [json.loads(line)["g_loss"] for line in lines[1]]


def test_wall_time_budget_stops_the_run_early(tmp_path):
    limits = Limits(wall_time_s=1e-6, max_generator_steps=50)
    config = tiny()
    apply_limits(config, limits, "quick")
    [row] = run_set([RunSpec("test", "rr", "time", 0, config, limits)], tmp_path, evaluate=fake_metrics)
    assert row["rounds"] == 1 and "wall-time budget" in row["stop_reason"]


def test_a_target_budget_stops_at_the_sharp_metric_and_counts_generator_steps(tmp_path):
    """Fig. 14's budget: measured every few G steps (per-batch round-robin steps G twice a round), stop
    at the first measurement at or under the target; a metric the run never measures is an error."""
    limits = Limits(target=1e9, target_metric="fd-sharp", max_generator_steps=40, eval_every_steps=4)
    config = tiny().with_overrides(["data.source=mnist", "data.limit=240", "output.metrics=cfid,fd-sharp"])
    apply_limits(config, limits, "quick")
    assert (config.train.rounds, config.output.eval_every) == (20, 2)  # round-robin: 2 G steps a round
    [row] = run_set([RunSpec("test", "rr", "target", 0, config, limits)], tmp_path)
    assert row["reached_target"] and row["rounds_to_target"] == 2 and row["rounds"] == 2
    assert row["target_metric"] == "fd-sharp" and "fd-sharp" in row["stop_reason"]
    [(round_number, _, value)] = row["target_history"]
    assert round_number == 2 and value > 0
    missing = Limits(target=1.0, target_metric="inception-fid", max_generator_steps=40, eval_every_steps=4)
    with pytest.raises(ValueError, match="target metric 'inception-fid' is not among the metrics"):
        run_set([RunSpec("test", "rr", "target", 0, config, missing)], tmp_path / "missing")
    with pytest.raises(ValueError, match="needs eval_every_steps"):
        Limits(target=1.0, target_metric="fd-sharp", max_generator_steps=40)


def test_a_flower_simulation_variant_trains_through_flower_and_its_budget_stops_it(tmp_path):
    """Fig. 14's Flower column: the run goes through Flower's simulation engine (one virtual SuperNode
    per party) and the experiment's round hooks still see every round and can end it."""
    limits = Limits(wall_time_s=1e-6, max_generator_steps=50)
    config = tiny("avg-output")
    apply_limits(config, limits, "quick")
    spec = RunSpec("test", "avg on flower", "time", 0, config, limits, transport="flower-simulation")
    [row] = run_set([spec], tmp_path, evaluate=fake_metrics)
    assert row["transport"] == "flower-simulation" and row["rounds"] == 1
    assert "wall-time budget" in row["stop_reason"]
    assert "Flower message overhead" in (tmp_path / "runs" / spec.name / "log.txt").read_text()
    with pytest.raises(ValueError, match="transport 'grpc' must be one of local, flower-simulation"):
        Variant("x", transport="grpc")


def table_cells(markdown: str) -> list[dict[str, str]]:
    """table.md's lines below its header, each as header -> cell (escaped "\\|" stays inside its cell)."""
    header, _, *lines = markdown.splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    return [dict(zip(cells(header), cells(line), strict=True)) for line in lines]


def test_tables_give_the_mean_and_its_95_percent_t_interval_and_mark_missing_values():
    # Rows as an older summary.json has them: no fd_sharp, precision or recall.
    rows = [{"variant": "a", "budget": "b", "rounds": 1, "generator_steps": 1, "wall_time_s": 1.0, "cfid": c}
            for c in (1.0, 3.0, None)]
    # Two seeds: mean 2, sd sqrt(2), t(0.975, 1) = 12.706 -> half-width 12.706 * sqrt(2) / sqrt(2) = 12.7.
    [cells] = table_cells(markdown_table(rows))
    assert cells["cfid"] == "2.0 [-10.7, 14.7] (2/3)"
    assert list(cells)[-len(TABLE_COLUMNS):] == list(TABLE_COLUMNS)
    # every column reads a value each run's row has: its metrics, and the wall time
    assert {column.key for column in COLUMNS} == {*METRIC_COLUMNS, "wall_time_s"}
    assert all(cells[name] == "n/a" for name in SHARP_METRICS)
    assert mean_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == "3.0 [1.0, 5.0]"  # t(0.975, 4) = 2.776, sd 1.58
    assert mean_interval([7.0]) == "7.0 [one seed]" and mean_interval([None]) == "n/a"
    assert mean_std([1.0, 3.0, None]) == "2.0 ± 1.4 (2/3)"
    rows[0]["variant"] = "0-4|5-9"
    assert "| 0-4\\|5-9 |" in markdown_table(rows)


def test_figures_run_the_papers_settings_beside_distgans_and_ablations_distgans_only():
    specs = plan_runs(EXPERIMENTS.get("fig2"), [0], "quick")
    by_setting = {spec.variant.rsplit(" ", 1)[1]: spec.config for spec in specs}
    paper, ours = by_setting["[paper]"], by_setting["[distgan]"]
    assert (paper.model.name, paper.train.batch_size, paper.train.lr_g, paper.train.g_average) == \
        ("paper-mlp", 100, 2e-4, None)
    assert paper.strategy.download_fraction is None and paper.strategy.server_update == "max"  # Alg. 1
    assert ours.model.name == "mlp-up" and ours.strategy.download_fraction == 1.0
    baselines = {(s.config.strategy.name, s.variant.endswith("[paper]")): s.config
                 for s in plan_runs(EXPERIMENTS.get("baselines"), [0], "quick")}
    fedgan = baselines[("fedgan", True)]
    assert fedgan.strategy.weighted and fedgan.train.local_steps == 20
    assert baselines[("md-gan", True)].strategy.swap_per_epoch
    rules = plan_runs(EXPERIMENTS.get("ablation-server-rule"), [0], "quick")
    assert [s.config.strategy.server_update for s in rules] == ["max", "mean", "sum"]
    downloads = plan_runs(EXPERIMENTS.get("ablation-download"), [0], "quick")
    assert [s.config.strategy.download_fraction for s in downloads] == [None, 0.1, 1.0]
    switch = plan_runs(EXPERIMENTS.get("ablation-switch"), [0], "quick")
    # Equal G steps: per batch, 2 steps a round; per epoch, a round is one pass over both parties' shares
    # (ceil(n_j / 128) steps each), so the budget rounds up to whole passes.
    per_batch, per_epoch = switch
    assert per_batch.config.train.rounds * generator_steps_per_round(per_batch.config) == 3000
    epoch_steps = generator_steps_per_round(per_epoch.config)
    assert epoch_steps > 2 * 15 and 3000 <= per_epoch.config.train.rounds * epoch_steps < 3000 + epoch_steps
    tricks = {s.variant: s.config for s in plan_runs(EXPERIMENTS.get("ablation-tricks"), [0], "quick")}
    assert tricks["no logit bound"].model.d_logit_bound is None and tricks["no G average"].train.g_average is None


def test_a_figures_paper_setting_trains_as_many_generator_steps_as_distgans():
    """fig6's budget is 1,500 rounds of distgan's per-batch round-robin (2 G steps each); the paper's
    per-epoch round-robin trains the same 3,000 G steps (rounded up to whole passes), not 1,500 passes."""
    ours, paper = sorted(plan_runs(EXPERIMENTS.get("fig6"), [0], "quick"), key=lambda s: s.variant)
    assert paper.variant.endswith("[paper]") and ours.variant.endswith("[distgan]")
    ours_steps = ours.config.train.rounds * generator_steps_per_round(ours.config)
    pass_steps = generator_steps_per_round(paper.config)
    assert ours_steps == 3000 and paper.limits.generator_steps == 3000
    assert 3000 <= paper.config.train.rounds * pass_steps < 3000 + pass_steps


def test_experiment_command_lists_and_rejects_unknown_names(capsys):
    assert main(["experiment", "--list"]) == 0
    assert "fig14" in capsys.readouterr().out
    assert main(["experiment", "nope"]) == 2
    assert "valid: ablation-download" in capsys.readouterr().err


def test_only_and_budget_select_the_runs_of_some_variants_and_name_the_valid_ones(capsys):
    assert main(["experiment", "baselines", "--scale", "quick", "--seeds", "2", "--budget", "equal-steps",
                 "--only", "fedgan 0-4", "--only", "md-gan dir", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    variants = {line.split("(")[1].split(")")[0] for line in lines}
    assert variants == {"fedgan 0-4|5-9 [paper]", "fedgan 0-4|5-9 [distgan]", "md-gan dir0.3/5 [paper]",
                        "md-gan dir0.3/5 [distgan]"}
    assert len(lines) == 4 * 2 and all("--equal-steps--" in line for line in lines)
    # An override that suits only the chosen variants (per-epoch round-robin refuses local_steps > 1) is fine.
    assert main(["experiment", "baselines", "--seeds", "1", "--only", "fedgan 0-4|5-9 [distgan]",
                 "--set", "train.local_steps=20", "--dry-run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # one run per budget
    assert main(["experiment", "baselines", "--only", "nope", "--dry-run"]) == 2
    assert "'centralized 0-4|5-9 [paper]'" in capsys.readouterr().err
    assert main(["experiment", "baselines", "--budget", "nope", "--dry-run"]) == 2
    assert "budgets equal-steps, equal-time" in capsys.readouterr().err


def test_an_experiment_run_records_the_evaluation_modules_numbers_and_tables_them(tmp_path):
    """Two seeds of a real run with the cheap metrics, on real digits (fake data has no evaluator): each row
    carries the numbers the evaluation module computed at the end, the sharp ones included, and table.md
    their mean and 95 % interval."""
    limits = Limits(rounds=2)
    specs = []
    for seed in (0, 1):
        config = tiny().with_overrides([f"output.metrics=cfid,{','.join(SHARP_METRICS)}",
                                        "data.source=mnist", "data.limit=240", f"runtime.seed={seed}"])
        apply_limits(config, limits, "quick")
        specs.append(RunSpec("test", "rr", "rounds", seed, config, limits))
    run_set(specs, tmp_path)
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["cfid"] > 0 and row["fd_sharp"] > 0
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert row["coverage"] is None and row["tstr"] is None  # not asked for
    [cells] = table_cells((tmp_path / "table.md").read_text())
    for column in COLUMNS:
        assert cells[column.header] == mean_interval([row[column.key] for row in rows], column.digits)
    for name in SHARP_METRICS:
        assert re.fullmatch(r"-?\d+\.\d+ \[-?\d+\.\d+, -?\d+\.\d+\]", cells[name]), cells[name]

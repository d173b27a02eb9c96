"""An experiment's summaries: ``summary.json``, ``table.md`` (mean and 95 % interval over seeds) and the
comparison report."""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distgan import run_folder
from distgan.checkpoint import atomic_write_text
from distgan.experiments.definitions import EXPERIMENTS

# One line per run; not a child of the "distgan" logger, whose handlers write the current run's log.txt.
log = logging.getLogger("distgan_experiments")


@dataclass(frozen=True)
class Column:
    """One column of table.md: the mean over seeds of one row value, with its 95 % interval."""

    header: str
    key: str
    """The summary.json row key (a row without it, e.g. from an older summary, counts as not measured)."""
    digits: int
    """Decimals of the mean and the interval's ends."""


COLUMNS = (
    Column("cfid", "cfid", 1), Column("fd-sharp", "fd_sharp", 1), Column("coverage", "coverage", 1),
    Column("party-coverage", "party_coverage", 2), Column("precision", "precision", 3),
    Column("recall", "recall", 3), Column("tstr", "tstr", 3), Column("wall time (s)", "wall_time_s", 1),
)
"""table.md's measured columns, in order: the header and every cell come from here."""
TABLE_COLUMNS = tuple(column.header for column in COLUMNS)


def write_summary(rows: Sequence[dict[str, Any]], out_dir: Path) -> None:
    experiment = EXPERIMENTS.get(rows[0]["experiment"]) if rows and rows[0]["experiment"] in EXPERIMENTS else None
    atomic_write_text(out_dir / "summary.json", json.dumps({"rows": list(rows)}, indent=1))
    text = markdown_table(rows)
    if experiment is not None and experiment.time_to_target:
        text += "\n" + time_to_target_table(rows)
    atomic_write_text(out_dir / "table.md", text)


def write_comparison_report(rows: Sequence[dict[str, Any]], out_dir: Path) -> Path | None:
    """``report.html``: the evaluation module's run report with the runs side by side -- the first
    seed of every variant and budget (all seeds' numbers are in table.md and summary.json)."""
    from distgan.report import ReportError, write_report

    first_seed: dict[tuple[str, str], str] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        first_seed.setdefault((row["variant"], row["budget"]), row["run_dir"])
    try:  # run_dir is relative to the experiment folder (so the folder can move)
        return write_report([out_dir / d for d in first_seed.values()], out_dir / run_folder.REPORT)
    except (ReportError, OSError, ValueError) as error:
        log.warning("comparison report not written: %s", error)
        return None

def mean_std(values: Sequence[float | None], digits: int = 1) -> str:
    """``mean ± std`` (sample std over seeds) of the values that exist; ``n/a`` when none do."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "n/a"
    mean = statistics.fmean(present)
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    suffix = "" if len(present) == len(values) else f" ({len(present)}/{len(values)})"
    return f"{mean:.{digits}f} ± {spread:.{digits}f}{suffix}"


def mean_interval(values: Sequence[float | None], digits: int = 1) -> str:
    """``mean [low, high]``: the mean over seeds and its 95 % confidence interval from Student's t
    (n - 1 degrees of freedom; the seeds' runs are independent draws of the same training). One value
    has no interval; ``n/a`` when none exist. A claim is supported only where intervals separate."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "n/a"
    mean = statistics.fmean(present)
    suffix = "" if len(present) == len(values) else f" ({len(present)}/{len(values)})"
    if len(present) == 1:
        return f"{mean:.{digits}f} [one seed]{suffix}"
    from scipy.stats import t  # a dependency of mlxtend, declared in pyproject

    half = float(t.ppf(0.975, len(present) - 1)) * statistics.stdev(present) / math.sqrt(len(present))
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]{suffix}"


def _markdown_row(cells: Sequence[str]) -> str:
    # A "|" inside a cell (variant labels such as "0-4|5-9") would split it: escape it.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["budget"]), []).append(row)
    return groups


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per variant and budget: the mean over seeds of every :data:`COLUMNS` value, each with its 95 %
    interval (:func:`mean_interval`); rounds and G steps as mean ± std."""
    header = ["variant", "budget", "seeds", "rounds", "G steps", *TABLE_COLUMNS]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    for (variant, budget), group in _groups(rows).items():
        cells = [variant, budget, str(len(group)), mean_std([r["rounds"] for r in group], 0),
                 mean_std([r["generator_steps"] for r in group], 0),
                 *(mean_interval([r.get(column.key) for r in group], column.digits) for column in COLUMNS)]
        lines.append(_markdown_row(cells))
    return "\n".join(lines) + "\n"


def time_to_target_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fig. 14: wall time to the quality target per variant, and the speed-up vs centralized.
    Runs that never reached the target count as not reached (their time is not averaged in)."""
    header = ["variant", "parties", "parties run in", "reached", "wall time to target (s)", "speed-up vs centralized"]
    lines = [_markdown_row(header), "|" + "---|" * len(header)]
    groups = _groups(rows)

    def mean_time(group: list[dict[str, Any]]) -> float | None:
        times = [r["time_to_target_s"] for r in group if r.get("reached_target")]
        return statistics.fmean(times) if times else None

    reference = next((mean_time(g) for g in groups.values() if g[0]["strategy"] == "centralized"), None)
    for group in groups.values():
        mean = mean_time(group)
        speedup = f"{reference / mean:.2f}x" if reference is not None and mean else "n/a"
        reached = sum(bool(r.get("reached_target")) for r in group)
        metric, target = group[0].get("target_metric"), group[0].get("target")
        lines.append(_markdown_row([
            group[0]["variant"], str(group[0]["parties"] if group[0]["strategy"] != "centralized" else 1),
            _where_parties_run(group[0]), f"{reached}/{len(group)} ({metric} <= {target:g})",
            mean_interval([r["time_to_target_s"] if r.get("reached_target") else None for r in group], 1),
            speedup]))
    return "\n".join(lines) + "\n"


def _where_parties_run(row: dict[str, Any]) -> str:
    if row.get("transport") == "flower-simulation":
        return "Flower simulation"
    workers = row["workers"]
    return f"{workers} worker process{'es' if workers > 1 else ''}" if workers else "this process"

"""The run report: one self-contained HTML file (images embedded as base64, so it can be mailed).

``report.html`` is written into every run folder at the end of training; ``distgan report RUN_DIR...``
compares several runs side by side. It reads only the run folder: ``config.json``,
``stats.jsonl``, ``metrics.jsonl``, ``parties.json``, ``samples/round-*.png`` and, once ``distgan audit``
has run where the data is, ``audit.json``. Sections: the metrics table, the per-party label breakdown
of the samples, the leakage audit, the sample grid over time, metric curves over rounds and over wall
time, losses, bytes per round, and the config.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.patches import Patch

from distgan import run_folder
from distgan.checkpoint import atomic_write_text
from distgan.plots import plot_losses, plt, smooth

if TYPE_CHECKING:
    from distgan.coordinator import Coordinator

log = logging.getLogger("distgan")

REPORT_FILE = run_folder.REPORT
AUDIT_FILE = run_folder.AUDIT
"""Written by ``distgan audit`` (distgan.privacy.audit); read here without importing the audit's torch code."""
MAX_FRAMES = 8
"""Sample grids shown per run (evenly spaced over the run, first and last included)."""
MAX_CURVES = 14
COUNT_SUFFIXES = ("/generated", "/reference", "/train_samples", "/test_samples", "/real_baseline")
PARTY_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"]
SHARED_COLOUR = "#999999"


class ReportError(ValueError):
    """A folder that is not a run, or nothing to report."""


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]
    stats: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    parties: dict[str, Any]
    samples: list[tuple[int, Path]] = field(default_factory=list)
    audit: dict[str, Any] | None = None
    test_split: dict[str, Any] | None = None
    """parties.json's statement of the test split (source, size, how chosen)."""

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def final_metrics(self) -> dict[str, Any]:
        return self.metrics[-1]["metrics"] if self.metrics else {}

    def elapsed_at(self, round_number: int) -> float | None:
        for record in self.stats:
            if record["round"] == round_number:
                return float(record["elapsed_s"])
        return None


def load_run(path: Path) -> RunData:
    if not path.is_dir():
        raise ReportError(f"{path}: no such run folder")
    config_path = path / run_folder.CONFIG
    if not config_path.is_file():
        raise ReportError(f"{path}: not a distgan run (no {run_folder.CONFIG})")
    try:
        config = json.loads(config_path.read_text())
        parties = run_folder.read_parties(path)
        audit = json.loads((path / AUDIT_FILE).read_text()) if (path / AUDIT_FILE).exists() else None
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: unreadable run file ({error})") from None
    return RunData(path, config, run_folder.read_stats(path), run_folder.read_metrics(path), parties,
                   run_folder.sample_grids(path), audit, run_folder.read_test_split(path))


# -- figures -----------------------------------------------------------------------------------------
def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _img(png: bytes, alt: str, css_class: str = "") -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img class="{css_class}" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def loss_figure(run: RunData) -> bytes:
    with tempfile.TemporaryDirectory() as folder:  # plots.plot_losses writes a file; reuse it as is
        target = Path(folder) / run_folder.LOSSES
        plot_losses(run.stats, target, run.name)
        return target.read_bytes()


def bytes_figure(runs: list[RunData]) -> bytes:
    figure, axis = plt.subplots(figsize=(7, 3), dpi=90)
    for index, run in enumerate(runs):
        if not run.stats:
            continue
        rounds = [r["round"] for r in run.stats]
        window = max(1, len(rounds) // 100)
        colour = PARTY_COLOURS[index % len(PARTY_COLOURS)]
        axis.plot(rounds, smooth([r["bytes_down"] / 1e6 for r in run.stats], window), color=colour,
                  label=f"{run.name} down")
        axis.plot(rounds, smooth([r["bytes_up"] / 1e6 for r in run.stats], window), color=colour, linestyle="--",
                  label=f"{run.name} up")
    axis.set_xlabel("round")
    axis.set_ylabel("MB per round")
    axis.set_title("communication (all parties)")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    return _png(figure)


def curve_keys(runs: list[RunData]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        for line in run.metrics:
            for key, value in line["metrics"].items():
                if (isinstance(value, (int, float)) and not isinstance(value, bool) and key not in keys
                        and not key.endswith(COUNT_SUFFIXES) and not key.startswith("time/")):
                    keys.append(key)
    return keys[:MAX_CURVES]


def metric_figure(runs: list[RunData], keys: list[str]) -> bytes:
    """One row per metric: against rounds (left) and training wall time (right); one line per run.
    A single figure: each separate matplotlib figure costs ~0.3 s to lay out and encode."""
    figure, axes = plt.subplots(len(keys), 2, figsize=(9, 2.3 * len(keys)), dpi=80, squeeze=False)
    for row, key in enumerate(keys):
        by_round, by_time = axes[row]
        for index, run in enumerate(runs):
            points = [(line["round"], line.get("elapsed_s") or run.elapsed_at(line["round"]), line["metrics"][key])
                      for line in run.metrics if isinstance(line["metrics"].get(key), (int, float))]
            if not points:
                continue
            colour = PARTY_COLOURS[index % len(PARTY_COLOURS)]
            by_round.plot([p[0] for p in points], [p[2] for p in points], marker="o", markersize=3, color=colour,
                          label=run.name)
            timed = [(p[1] / 60, p[2]) for p in points if p[1] is not None]
            by_time.plot([t for t, _ in timed], [v for _, v in timed], marker="o", markersize=3, color=colour)
        by_round.set_xlabel("round")
        by_time.set_xlabel("training wall time (min)")
        for axis in (by_round, by_time):
            axis.set_ylabel(key)
            axis.grid(alpha=0.3)
        if row == 0:
            by_round.legend(fontsize=7)
    return _png(figure)


def party_of_label(parties: dict[str, Any]) -> dict[int, list[int]]:
    holders: dict[int, list[int]] = {}
    for party, info in sorted(parties.items(), key=lambda item: int(item[0])):
        for label, count in enumerate(info.get("label_counts", [])):
            if count > 0:
                holders.setdefault(label, []).append(int(party))
    return holders


def label_figure(run: RunData) -> bytes | None:
    """Generated samples by evaluator label, each bar coloured by the party that holds that label."""
    final = run.final_metrics
    histogram = final.get("coverage/histogram")
    if not isinstance(histogram, list) or not histogram:
        return None
    holders = party_of_label(run.parties)
    total = sum(histogram)
    figure, axis = plt.subplots(figsize=(5.5, 3), dpi=90)
    labels = list(range(len(histogram)))
    colours = []
    for label in labels:
        owners = holders.get(label, [])
        colours.append(PARTY_COLOURS[owners[0] % len(PARTY_COLOURS)] if len(owners) == 1 else SHARED_COLOUR)
    axis.bar(labels, histogram, color=colours)
    data_total = sum(sum(info.get("label_counts", [])) for info in run.parties.values())
    if data_total and total:
        expected = [sum(info["label_counts"][label] for info in run.parties.values()
                        if label < len(info.get("label_counts", []))) / data_total * total for label in labels]
        axis.plot(labels, expected, "k_", markersize=18, label="parties' data (scaled)")
    handles, names = axis.get_legend_handles_labels()
    for party in sorted({owners[0] for owners in holders.values() if len(owners) == 1}):
        handles.append(Patch(color=PARTY_COLOURS[party % len(PARTY_COLOURS)]))
        names.append(f"party {party}'s labels")
    if any(len(owners) > 1 for owners in holders.values()):
        handles.append(Patch(color=SHARED_COLOUR))
        names.append("held by several parties")
    axis.set_xticks(labels)
    axis.set_xlabel("digit predicted by the evaluator (confident samples)")
    axis.set_ylabel("samples")
    axis.set_title(f"{run.name}: {total} confident samples")
    axis.legend(handles, names, fontsize=7)
    return _png(figure)


# -- html -----------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } tr.differs td { background: #fff6d5; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: 12px; }
img.grid { width: 170px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #666; font-size: 12px; }
.collapsed { color: #fff; background: #c0392b; padding: 8px 12px; font-weight: bold; }
"""

# Marks the page as checked once every embedded image has decoded (the test reads it via --dump-dom).
CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', ok + '/' + images.length);
});
</script>
"""


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    return str(value)


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def summary_rows(run: RunData) -> dict[str, str]:
    last = run.stats[-1] if run.stats else {}
    total_bytes = sum(r.get("bytes_down", 0) + r.get("bytes_up", 0) for r in run.stats)
    return {"rounds": str(last.get("round", 0)),
            "training wall time": f"{last.get('elapsed_s', 0) / 60:.2f} min" if last else "–",
            "traffic (down + up)": f"{total_bytes / 1e6:.1f} MB",
            "metrics at round": str(run.metrics[-1]["round"]) if run.metrics else "–",
            "test split (no party holds it)": describe_test_split(run.test_split)}


def describe_test_split(statement: dict[str, Any] | None) -> str:
    if not statement:
        return "– (not recorded: a run from before test splits)"
    size = statement.get("size")
    return f"{_format(size) if size is not None else '?'} samples of {statement.get('source', '?')}: {statement.get('how', '?')}"


def metrics_section(runs: list[RunData]) -> str:
    summaries = [summary_rows(run) for run in runs]
    rows = [[key] + [s[key] for s in summaries] for key in summaries[0]]
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.final_metrics if k not in keys and k != "coverage/histogram"]
    rows += [[key] + [_format(run.final_metrics.get(key)) for run in runs] for key in keys]
    note = "" if any(run.metrics for run in runs) else \
        '<p class="note">No metrics recorded (see log.txt; <code>distgan evaluate RUN_DIR --save</code> adds them).</p>'
    return "<h2>Metrics (final)</h2>" + _table(["", *[run.name for run in runs]], rows) + note


def config_section(runs: list[RunData]) -> str:
    flats = [_flatten(run.config) for run in runs]
    keys = sorted({k for flat in flats for k in flat})
    differs = [len({json.dumps(flat.get(k)) for flat in flats}) > 1 for k in keys]
    rows = [[k] + [_format(flat.get(k)) for flat in flats] for k in keys]
    css = ["differs" if d else "" for d in differs]
    title = "Config" if len(runs) == 1 else "Config (differences highlighted)"
    return f"<h2>{title}</h2>" + _table(["field", *[run.name for run in runs]], rows, css)


def samples_section(runs: list[RunData]) -> str:
    parts = ["<h2>Samples over time</h2>",
             '<p class="note">Fixed latent vectors, so frames compare; generator in eval mode.</p>']
    for run in runs:
        frames = run.samples
        if len(frames) > MAX_FRAMES:
            step = (len(frames) - 1) / (MAX_FRAMES - 1)
            frames = [frames[round(i * step)] for i in range(MAX_FRAMES)]
        figures = "".join(f"<figure>{_img(path.read_bytes(), f'{run.name} round {number}', 'grid')}"
                          f"<figcaption>round {number}</figcaption></figure>" for number, path in frames)
        parts.append(f"<h3>{html.escape(run.name)}</h3><div class='row'>{figures or 'no sample grids'}</div>")
    return "".join(parts)


def labels_section(runs: list[RunData]) -> str:
    figures, tables = [], []
    for run in runs:
        png = label_figure(run)
        if png:
            figures.append(f"<figure>{_img(png, f'{run.name} label breakdown')}</figure>")
        final = run.final_metrics
        holders = party_of_label(run.parties)
        histogram = final.get("coverage/histogram") or []
        rows = []
        for party, info in sorted(run.parties.items(), key=lambda item: int(item[0])):
            labels = [label for label, count in enumerate(info.get("label_counts", [])) if count > 0]
            own = sum(histogram[label] for label in labels if label < len(histogram) and holders.get(label) == [int(party)])
            share = f"{own / sum(histogram):.1%}" if histogram and sum(histogram) else "–"
            rows.append([party, str(info.get("samples", "?")), _format(labels) if labels else "unlabelled",
                         share, _format(final.get(f"party-coverage/party-{party}")),
                         _format(final.get(f"party-coverage/party-{party}/missing"))])
        if rows:
            tables.append(f"<div><h3>{html.escape(run.name)}</h3>" + _table(
                ["party", "samples", "labels", "samples of labels only it holds", "its labels covered",
                 "missing"], rows) + "</div>")
    if not figures and not tables:
        return ""
    return ("<h2>Did each party's data count? Label breakdown of the samples</h2>"
            "<p class='note'>Evaluator labels of the generated samples (confident predictions), coloured by "
            "the party holding each label; from public label counts (parties.json), never from samples.</p>"
            f"<div class='row'>{''.join(figures)}</div><div class='row'>{''.join(tables)}</div>")


def audit_section(runs: list[RunData]) -> str:
    """The leakage audit per party, or how to get it: the audit reads the parties' data, so it runs where
    the data is (``distgan audit RUN_DIR``), never as part of training on the coordinator."""
    parts = ["<h2>Leakage audit</h2>"]
    for run in runs:
        heading = f"<h3>{html.escape(run.name)}</h3>" if len(runs) > 1 else ""
        audit = run.audit
        if not audit:
            parts.append(f"{heading}<p class='note'>Not audited yet: run <code>distgan audit "
                         f"{html.escape(str(run.path))}</code> where the parties' data is; it writes audit.json "
                         "and rewrites this report with the audit in it.</p>")
            continue
        rows = [[party, str(r.get("members", "?")), _format(r.get("memorization_ratio")),
                 _format(r.get("closer_to_training")), _format(r.get("membership_auc_distance")),
                 _format(r.get("membership_auc_discriminator"))]
                for party, r in sorted(audit.get("parties", {}).items(), key=lambda item: int(item[0]))]
        thresholds = audit.get("thresholds", {})
        flags = audit.get("flags", [])
        verdict = ("<ul>" + "".join(f"<li><b>flag</b>: {html.escape(flag)}</li>" for flag in flags) + "</ul>" if flags
                   else f"<p>No leakage flagged (every membership AUC &lt; {_format(thresholds.get('membership_auc'))}, "
                        f"every memorization ratio &gt; {_format(thresholds.get('memorization_ratio'))}).</p>")
        parts.append(
            f"{heading}<p class='note'>Round {_format(audit.get('round'))}, {_format(audit.get('generated'))} generated "
            f"samples; non-members: {_format(audit.get('held_out', {}).get('count'))} real samples from "
            f"{html.escape(str(audit.get('held_out', {}).get('source', '?')))} that no party trained on. "
            "Memorization ratio: median nearest-member over nearest-non-member distance (1 = none, 0 = copies); "
            "membership AUC: 0.5 is chance, 1 gives members away.</p>"
            + _table(["party", "members", "memorization ratio", "closer to training", "membership AUC (distance)",
                      "membership AUC (party D)"], rows) + verdict)
    return "".join(parts)


def curves_section(runs: list[RunData]) -> str:
    keys = curve_keys(runs)
    if not keys:
        return ""
    image = _img(metric_figure(runs, keys), "metrics over rounds and wall time")
    return f"<h2>Metrics over rounds and wall time</h2><div class='row'><figure>{image}</figure></div>"


def losses_section(runs: list[RunData]) -> str:
    images = "".join(f"<figure>{_img(loss_figure(run), f'{run.name} losses')}</figure>" for run in runs if run.stats)
    return f"<h2>Losses</h2><div class='row'>{images or 'no rounds recorded'}</div>"


def traffic_section(runs: list[RunData]) -> str:
    if not any(run.stats for run in runs):
        return ""
    return f"<h2>Bytes per round</h2><div class='row'><figure>{_img(bytes_figure(runs), 'bytes per round')}</figure></div>"


def health_section(runs: list[RunData]) -> str:
    """A red banner for every run whose generator collapsed (``health.json``, see distgan.health)."""
    from distgan.health import read_health

    banners = []
    for run in runs:
        health = read_health(run.path)
        if health is not None and health.get("collapsed"):
            banners.append(f"<p class='collapsed'>{html.escape(run.name)}: TRAINING COLLAPSED at round "
                           f"{html.escape(str(health.get('round')))}: {html.escape(str(health.get('reason')))}</p>")
    return "".join(banners)


def render(runs: list[RunData]) -> str:
    if not runs:
        raise ReportError("no runs to report")
    title = f"distgan report: {', '.join(run.name for run in runs)}"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = "".join([
        (f"<h1>{html.escape(title)}</h1><p class='note'>written {stamp}; folders: "
         f"{html.escape(', '.join(str(run.path) for run in runs))}</p>"),
        health_section(runs), metrics_section(runs), labels_section(runs), audit_section(runs), samples_section(runs), curves_section(runs),
        losses_section(runs), traffic_section(runs), config_section(runs)])
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}{CHECK_SCRIPT}</body></html>")


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write the report of one run (default: ``RUN_DIR/report.html``) or a comparison of several."""
    runs = [load_run(Path(d)) for d in run_dirs]
    if out is None:
        if len(runs) != 1:
            raise ReportError("comparing several runs needs --out FILE.html")
        out = runs[0].path / REPORT_FILE
    atomic_write_text(out, render(runs))
    out.chmod(0o644)  # a file to share (the atomic temp file starts at 0600)
    return out


def attach_report(coordinator: Coordinator) -> None:
    """Write ``report.html`` at the end of training (after the metrics end hook)."""

    def write(coordinator: Coordinator) -> None:
        try:
            path = write_report([coordinator.run_dir])
        except (ReportError, OSError, ValueError) as error:
            log.warning("report.html not written: %s", error)
            return
        log.info("report: %s", path)

    coordinator.end_hooks.append(write)

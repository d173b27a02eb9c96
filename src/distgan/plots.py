"""Loss and time plots from ``stats.jsonl`` (the paper's Figures 8-13 kind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from distgan.checkpoint import atomic_write_bytes
from distgan.run_folder import read_jsonl  # noqa: F401  (its old import path)


def smooth(values: list[float], window: int) -> list[float]:
    if window <= 1:
        return values
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def plot_losses(stats: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """G loss and each party's D loss against rounds, lightly smoothed."""
    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=100)
    if stats:
        rounds = [r["round"] for r in stats]
        window = max(1, len(stats) // 100)
        axis.plot(rounds, smooth([r["g_loss"] for r in stats], window), label="G", linewidth=1.5)
        party_ids = sorted({k for r in stats for k in r["parties"]}, key=int)
        for party in party_ids[:12]:
            points = [(r["round"], r["parties"][party]["d_loss"]) for r in stats if party in r["parties"]]
            axis.plot([x for x, _ in points], smooth([y for _, y in points], window),
                      label=f"D party {party}", linewidth=0.8, alpha=0.8)
    axis.set_xlabel("round")
    axis.set_ylabel("loss")
    axis.set_title(title or "losses")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())

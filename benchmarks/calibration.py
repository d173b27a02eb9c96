"""What a metric's number means: every metric on real images with known defects (docs/EVALUATION.md).

For each domain, 2,000 real images of its train split (none is in any metric's reference) stand in
for a generator's output, as they are and with the defects of ``distgan.metrics.calibration``:
Gaussian noise sigma 0.1/0.2/0.3 (in [-1, 1] units), blur sigma 0.5/1 px, only half the classes,
one class, pure noise. Each set is scored like a run's samples, against the domain's test split.
Prints one markdown table per domain (the numbers of docs/EVALUATION.md).

  python benchmarks/calibration.py [--domains mnist fashion-mnist] [--count 2000] [--metrics cfid,fd-sharp,...]
"""

from __future__ import annotations

import argparse
import os
import time

from distgan.metrics.calibration import CONDITIONS, score_condition
from distgan.metrics.sharp import DOMAINS

METRICS = ["cfid", "fd-sharp", "precision", "recall", "density", "manifold-coverage", "coverage", "cis", "tstr"]
COLUMNS = [("cfid", "cfid", ".1f"), ("fd-sharp", "fd-sharp", ".1f"), ("precision", "precision", ".3f"),
           ("recall", "recall", ".3f"), ("density", "density", ".3f"), ("manifold-coverage", "manif. cov.", ".3f"),
           ("coverage/classes", "classes", "d"), ("cis", "cis", ".2f"), ("tstr/accuracy", "tstr", ".3f")]


def domain_table(name: str, count: int, metrics: list[str]) -> list[str]:
    columns = [c for c in COLUMNS if c[0].split("/")[0] in metrics]
    lines = [f"| {name}: images (n) | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for condition in CONDITIONS:
        started = time.perf_counter()
        made, values = score_condition(name, condition, metrics, count)
        cells = [format(values[key], spec) if key in values else "–" for key, _, spec in columns]
        lines.append(f"| {condition.name} ({made}) | " + " | ".join(cells) + " |")
        print(f"  {name}: {condition.name}: {time.perf_counter() - started:.0f} s", flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=sorted(DOMAINS), choices=sorted(DOMAINS))
    parser.add_argument("--count", type=int, default=2000, help="images per condition (as many as metrics generate)")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated metric names")
    args = parser.parse_args()
    metrics = [m for m in args.metrics.split(",") if m]
    print(f"load average at start {os.getloadavg()[0]:.1f} (timings only; the numbers do not depend on load)")
    tables = [domain_table(name, args.count, metrics) for name in args.domains]
    for table in tables:
        print()
        print("\n".join(table))


if __name__ == "__main__":
    main()

"""The privacy/utility table of docs/PRIVACY.md: strategy x target epsilon x data set x seed: train, audit, TSTR.

Each cell is ``distgan train`` followed by ``distgan audit``, then TSTR computed here: a fresh CNN
(:func:`distgan.metrics.digits.train_classifier`) trained on ``--tstr-samples`` generated images and
tested on the **test split no party saw**: the audit's non-members (``privacy.audit.non_members``: the
source's test split, and the samples after ``data.limit``). Labels of the generated images: the labels a
label-conditional G (dp-merf) made them for, else the predictions of the evaluator of the run's domain
(digits or Fashion-MNIST; a run without one gets no TSTR). Data sets (``--data``):

- ``mnist``: the bundled 5,000 digits, ``labels:0-4/5-9``: 2 parties x ~2,000, 1,000 test digits (the
  source's fixed stratified test split; ``data.limit=4000`` keeps the parties' shares at 4,000 when a
  source has no test split of its own).
- ``fashion``: Fashion-MNIST's 70,000 images (Debian's train and t10k files joined into one IDX folder
  under ``--work``), ``labels:0-4/5-9``, ``data.limit=60000``: 2 parties x 30,000, 10,000 test images.
- ``fashion-mnist``: the ``fashion-mnist`` source: its 60,000 train images shared, 2 parties x 30,000,
  tested on its own t10k files (the table in docs/PRIVACY.md was measured with ``fashion``, before
  that source existed).

Cells run one after another (``--jobs`` > 1: in parallel processes), each of one thread. Prints one
markdown row per run, then the mean over seeds per (data, strategy, epsilon): TSTR, and as a second
measure ``distgan evaluate``'s cfid, fd-sharp (the sharp Fréchet distance) and recall with the evaluator of
the run's domain against the test split, the audit's worst membership AUCs, and the wall time of
training (under whatever load the machine had).

  python benchmarks/privacy_table.py --data mnist --strategies dp-merf --epsilons 1 10 inf --seeds 0 1 2 \\
      --rounds 2000 --keep runs/privacy -- --set train.batch_size=500
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from distgan.plots import read_jsonl
from distgan.report import AUDIT_FILE

CLI = "import sys; from distgan.cli import main; sys.exit(main())"
FASHION_FILES = Path("/usr/share/datasets/fashion-mnist")

DATA_SETS: dict[str, dict[str, Any]] = {
    "mnist": {"source": "mnist", "limit": 4000},
    "fashion": {"source": None, "limit": 60000},  # what docs/PRIVACY.md's table used
    # The fashion-mnist source (issue 12): 60,000 train images shared, Fashion-MNIST's own t10k as the test split.
    "fashion-mnist": {"source": "fashion-mnist", "limit": "none"},
}
# Measured once per cell by `distgan evaluate` (the run's domain evaluator, 2,000 samples against the test
# split): a second measure beside TSTR, and the sharp Fréchet metric the table asks for.
EVALUATION_METRICS = "cfid,fd-sharp,recall"


def fashion_folder(work: Path) -> Path:
    """Fashion-MNIST's train and t10k files joined into one IDX folder (the source's seeded shuffle then
    gives the parties 60,000 and leaves 10,000 that no party sees: the test split and the audit's
    non-members). Written once."""
    folder = work / "fashion-mnist-all"
    if (folder / "train-labels-idx1-ubyte").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for kind, header in (("images", 16), ("labels", 8)):
        parts = []
        for split in ("train", "t10k"):
            with gzip.open(FASHION_FILES / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz") as stream:
                parts.append(stream.read())
        count = sum(int.from_bytes(part[4:8], "big") for part in parts)
        joined = parts[0][:4] + count.to_bytes(4, "big") + parts[0][8:header] + b"".join(p[header:] for p in parts)
        name = f"train-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        (folder / f"{name}.part").write_bytes(joined)
        (folder / f"{name}.part").rename(folder / name)
    return folder


def test_split(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The run source's samples after ``data.limit``: no party trained on them."""
    from distgan.assembly import plan_data
    from distgan.privacy.audit import non_members
    from distgan.training import load_run_config

    config = load_run_config(run_dir)
    held_out = non_members(config, plan_data(config)).images
    return held_out.images, held_out.labels


def tstr(run_dir: Path, samples: int) -> tuple[float, str]:
    """TSTR accuracy on the run's test split, and where the training labels came from."""
    from distgan.metrics.digits import train_classifier
    from distgan.party import to_unit_range
    from distgan.sampling import generate_labelled, load_generator

    generator, config, _ = load_generator(run_dir)
    images, labels = generate_labelled(generator, samples, seed=1, latent_dim=config.model.latent_dim)
    source = "generated"
    if labels is None:
        # An unconditional G's images get the labels of the evaluator of the run's domain (the Fashion
        # evaluator for Fashion-MNIST: the digit evaluator there calls 60 % of them "8", TSTR 0.07).
        from distgan.metrics.domains import DOMAINS, run_domain
        from distgan.metrics.evaluator import evaluate_images

        decision = run_domain(config)
        if decision.domain is None:
            raise SystemExit(f"{run_dir.name}: no TSTR: its G is unconditional and no evaluator can label its "
                             f"images ({decision.note})")
        evaluator = DOMAINS.get(decision.domain).evaluator()
        labels = evaluate_images(evaluator, images).probabilities.argmax(1)
        source = f"{decision.domain} evaluator"
    classifier = train_classifier(images.float(), labels)
    test_images, test_labels = test_split(run_dir)
    with torch.no_grad():
        predicted = torch.cat([classifier(to_unit_range(part)).argmax(1) for part in test_images.split(1000)])
    return float((predicted == test_labels).double().mean()), source


def evaluate(run_dir: Path, environment: dict[str, str]) -> dict[str, Any]:
    """The run's final G measured by `distgan evaluate` with the evaluator of its domain; {} when the run's
    images have no evaluator (the command then says so, and the table shows dashes)."""
    done = subprocess.run([sys.executable, "-c", CLI, "evaluate", str(run_dir), "--metrics", EVALUATION_METRICS,
                           "--json"], capture_output=True, text=True, env=environment, check=False)
    if done.returncode != 0:
        print(f"{run_dir.name}: no evaluation ({done.stderr.strip()[-300:]})", file=sys.stderr, flush=True)
        return {}
    return dict(json.loads(done.stdout.strip().splitlines()[-1])["metrics"])


def run_cell(data: str, strategy: str, epsilon: str, seed: int, rounds: int, root: Path, work: Path,
             tstr_samples: int, extra: list[str]) -> dict[str, Any]:
    # Cells that differ only in the options after "--" get folders of their own (not one overwritten).
    options = f"-x{hashlib.sha1(' '.join(extra).encode()).hexdigest()[:6]}" if extra else ""
    run_dir = root / f"{data}-{strategy}-eps{epsilon}-seed{seed}{options}"
    spec = DATA_SETS[data]
    source = spec["source"] or f"mnist:{fashion_folder(work)}"
    train = [sys.executable, "-c", CLI, "train", "--strategy", strategy, "--rounds", str(rounds),
             "--data", source, "--split", "labels:0-4/5-9", "--set", f"data.limit={spec['limit']}",
             "--set", f"runtime.seed={seed}", "--set", "output.metrics=",
             "--out", str(run_dir), "--overwrite", "--quiet", *extra]
    if epsilon != "inf":
        train += ["--dp-epsilon", epsilon]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    for command in (train, [sys.executable, "-c", CLI, "audit", str(run_dir)]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{run_dir.name}: {' '.join(command[3:5])} failed ({done.returncode}):\n"
                             f"{done.stderr[-3000:]}")
    accuracy, label_source = tstr(run_dir, tstr_samples)
    values = evaluate(run_dir, environment)
    stats = read_jsonl(run_dir / "stats.jsonl")
    audit = json.loads((run_dir / AUDIT_FILE).read_text())
    spent = [party.get("epsilon", 0.0) for record in stats for party in record["parties"].values()]

    def per_party(field: str) -> list[float]:
        return [r[field] for r in audit["parties"].values() if r[field] is not None]

    row = {"data": data, "strategy": strategy, "epsilon": epsilon, "seed": seed,
           "spent": max(spent, default=0.0) if epsilon != "inf" else None, "rounds": stats[-1]["round"],
           "tstr": accuracy, "labels": label_source, "cfid": values.get("cfid"),
           "fd_sharp": values.get("fd-sharp"), "recall": values.get("recall"),
           "auc_g": max(per_party("membership_auc_distance")),
           "auc_d": max(per_party("membership_auc_discriminator"), default=None),
           "train_s": stats[-1]["elapsed_s"], "cell_s": time.perf_counter() - started}
    print(json.dumps(row), flush=True)
    return row


def cell(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return statistics.fmean(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["mnist"], choices=sorted(DATA_SETS))
    parser.add_argument("--strategies", nargs="+", default=["dp-merf"])
    parser.add_argument("--epsilons", nargs="+", default=["1", "10", "inf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--tstr-samples", type=int, default=5000, help="generated images the TSTR CNN trains on")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once (one thread each)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "distgan-privacy-data",
                        help="where the joined Fashion-MNIST folder is written")
    parser.add_argument("extra", nargs="*", help="options passed on to distgan train (after --)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.keep or Path(tempfile.mkdtemp(prefix="distgan-privacy-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs in {root}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    cells = [(d, s, e, seed) for d in args.data for s in args.strategies for e in args.epsilons for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(c[0], c[1], c[2], c[3], args.rounds, root, args.work,
                                                args.tstr_samples, args.extra), cells))
    print("| data | strategy | target ε | seed | ε spent | tstr ↑ | cfid ↓ | fd-sharp ↓ | recall ↑ | audit AUC, G "
          "| audit AUC, D | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} | {row['strategy']} | {row['epsilon']} | {row['seed']} | {cell(row['spent'], 2)} | "
              f"{cell(row['tstr'])} | {cell(row['cfid'], 1)} | {cell(row['fd_sharp'], 1)} | {cell(row['recall'])} | "
              f"{cell(row['auc_g'])} | {cell(row['auc_d'])} | {cell(row['train_s'], 0)} |")
    print()
    print("| data | strategy | target ε | seeds | tstr ↑ (mean) | tstr min–max | cfid ↓ (mean) | fd-sharp ↓ (mean) "
          "| recall ↑ (mean) | audit AUC, G (worst) | train s (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in dict.fromkeys((row["data"], row["strategy"], row["epsilon"]) for row in rows):
        group = [row for row in rows if (row["data"], row["strategy"], row["epsilon"]) == key]
        accuracies = [row["tstr"] for row in group]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {len(group)} | {cell(mean(group, 'tstr'))} | "
              f"{min(accuracies):.3f}–{max(accuracies):.3f} | {cell(mean(group, 'cfid'), 1)} | "
              f"{cell(mean(group, 'fd_sharp'), 1)} | {cell(mean(group, 'recall'))} | "
              f"{cell(max(row['auc_g'] for row in group))} | {cell(mean(group, 'train_s'), 0)} |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""distgan audit: how much a trained run leaks about each party's data (memorization, membership)."""

from __future__ import annotations

import argparse
from pathlib import Path

from distgan.cli.common import COMMANDS, Command, non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by distgan train")
    parser.add_argument("--samples", type=positive_int, default=2000,
                        help="generated images to audit (default 2000)")
    parser.add_argument("--max-reference", type=positive_int, default=1000,
                        help="members and non-members compared per party, at most (default 1000)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of latents and subsets (default 0)")
    parser.add_argument("--round", type=non_negative_int, default=None,
                        help="audit the checkpoint of this round (default: the newest)")


def run(args: argparse.Namespace) -> int:
    from distgan.privacy.audit import AUDIT_FILE, audit_run
    from distgan.report import ReportError, write_report

    result = audit_run(args.run_dir, args.samples, args.max_reference, args.seed, args.round)
    print(f"audit of {args.run_dir} (round {result['round']}, {result['strategy']}): {result['generated']} generated, "
          f"non-members from {result['held_out']['source']}")
    print(f"{'party':>5} {'n':>5} {'memorization':>12} {'closer-to-train':>15} {'MIA AUC dist':>12} {'MIA AUC D':>9}")
    for party, r in result["parties"].items():
        ratio = "-" if r["memorization_ratio"] is None else f"{r['memorization_ratio']:.3f}"
        d_auc = "-" if r["membership_auc_discriminator"] is None else f"{r['membership_auc_discriminator']:.3f}"
        print(f"{party:>5} {r['members']:>5} {ratio:>12} {r['closer_to_training']:>15.3f} "
              f"{r['membership_auc_distance']:>12.3f} {d_auc:>9}")
    for flag in result["flags"]:
        print(f"FLAG {flag}")
    if not result["flags"]:
        print("no leakage flagged (membership AUC < {membership_auc}, memorization ratio > {memorization_ratio})"
              .format(**result["thresholds"]))
    print(f"wrote {Path(args.run_dir) / AUDIT_FILE}")
    try:
        print(f"report with the audit section: {write_report([Path(args.run_dir)])}")
    except (ReportError, OSError) as error:
        print(f"report.html not rewritten: {error}")
    return 0


COMMANDS.register("audit", "leakage audit of a run: memorization ratio and membership-inference AUC per party")(
    Command(configure, run, "Run where the parties' data is (it reads every share): compares generated samples and "
                            "each party's D with its members and with held-out real samples; writes audit.json."))

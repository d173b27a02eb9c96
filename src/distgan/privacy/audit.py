"""Leakage audit of a finished run: memorization and membership inference, per party.

The audit is the data holders' own tool: it runs where the data is, reads every party's share
(rebuilt from the run's config with :func:`distgan.assembly.plan_data`) and compares it with
*non-members*, real samples from the same source that no party trained on: the run's test split
(:mod:`distgan.data.splits`; every labelled source has one by default, so every run, DP or not, can
be audited), plus any train sample outside every share (with ``data.limit = N``, the rest of the
train part after the run's seeded shuffle, or whatever a split leaves out). For a labelled source,
party j's non-members are those with party j's labels, so both sets follow the same distribution.

Per party, on equal-sized subsets of members and non-members (so nearest-neighbour distances
compare fairly):

- **memorization ratio**: median over generated samples of the distance to the nearest member
  over that to the nearest non-member (pixel space, [-1, 1]). About 1 when G generalizes; near 0
  when it reproduces training samples. ``closer_to_training`` is the fraction of generated samples
  nearer a member than any non-member (0.5 when nothing is memorized).
- **membership inference, distance attack** (GAN-Leaks' full black-box attack, Chen et al. 2020):
  score a candidate by minus its distance to the nearest of the generated samples; the AUC of
  that score on members vs non-members. 0.5 is chance; 1 means the generator gives members away.
- **membership inference, discriminator attack**: score by the party's own D's logit (the newest
  D in the party's checkpoints). It measures what D's weights would reveal if they left the party
  (they do in server-d, fedgan, md-gan); under DP-SGD D itself is private.

``audit_run(run_dir)`` writes ``audit.json`` in the run folder and returns the same dict.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distgan import run_folder
from distgan.assembly import DataPlan, plan_data
from distgan.checkpoint import CheckpointError, atomic_write_text, unprefixed
from distgan.config import Config
from distgan.data import LabelledImages
from distgan.images import to_unit_range
from distgan.models import build_models
from distgan.report import AUDIT_FILE

MEMBERSHIP_AUC_FLAG = 0.6
"""A membership AUC at or above this is flagged (0.5 is chance)."""
MEMORIZATION_RATIO_FLAG = 0.8
"""A memorization ratio at or below this is flagged (1 is no memorization)."""


class AuditError(ValueError):
    """The run cannot be audited as asked; the message says why and what to do."""


def _nearest_distances(queries: torch.Tensor, references: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Euclidean distance from each query to its nearest reference (rows are flattened images)."""
    if len(references) == 0:
        raise AuditError("no reference samples to measure distances to")
    return torch.cat([torch.cdist(part, references).min(dim=1).values for part in queries.split(chunk)])


def membership_auc(member_scores: torch.Tensor, non_member_scores: torch.Tensor) -> float:
    """P(score of a member > score of a non-member), ties counting half: the ROC AUC (Mann-Whitney)."""
    members, others = member_scores.double()[:, None], non_member_scores.double()[None, :]
    return float(((members > others).double() + 0.5 * (members == others).double()).mean())


@dataclasses.dataclass(frozen=True)
class NonMembers:
    images: LabelledImages
    source: str


def non_members(config: Config, plan: DataPlan) -> NonMembers:
    """The run's test split and the train samples in no party's share (see the module docstring)."""
    full_config = dataclasses.replace(config, data=dataclasses.replace(config.data, limit=None))
    full = plan_data(full_config).data  # the same seeded shuffle; the run used its first ``limit``
    used = torch.zeros(len(full), dtype=torch.bool)
    for index in plan.shares.indices:
        used[index] = True  # indices into plan.data, which is the prefix of ``full``
    unused = (~used).nonzero().squeeze(1)
    test = plan.test if plan.test is not None else full.subset(unused[:0])
    if len(unused) == 0 and len(test) == 0:
        raise AuditError(f"every sample of data source {config.data.source!r} is in some party's share and it has no "
                         "test split, so no real non-member is left to compare with; train with --set data.test=N "
                         "(held out from every party) or --set data.limit=N (the rest of the source is held out)")
    pool = LabelledImages(torch.cat([test.images, full.images[unused]]), torch.cat([test.labels, full.labels[unused]]),
                          "held-out")
    # A byte-identical copy of a member is no non-member (sources can hold duplicates).
    member_keys = {bytes(row) for row in plan.data.images.flatten(1).numpy()}
    keep = torch.tensor([bytes(row) not in member_keys for row in pool.images.flatten(1).numpy()], dtype=torch.bool)
    parts = []
    if len(test):
        parts.append(f"the test split ({len(test)} samples)")
    if config.data.limit is not None:
        parts.append(f"the {len(full) - len(plan.data)} samples after data.limit={config.data.limit}")
    elif len(unused):
        parts.append(f"{len(unused)} samples left out by the split")
    return NonMembers(pool.subset(keep.nonzero().squeeze(1), name="held-out"),
                      f"{config.data.source}: {' and '.join(parts)}")


def _subsample(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    return images[torch.randperm(len(images), generator=generator)[:count]]


def audit_party(generated: torch.Tensor, members: LabelledImages, held_out: LabelledImages, max_reference: int,
                seed: int, discriminator: nn.Module | None = None) -> dict[str, Any]:
    """The audit of one party's share against generated images ``[M, C, H, W]`` in [-1, 1]."""
    labels = sorted({int(v) for v in members.labels.unique() if v >= 0})
    if labels:
        held_out = held_out.subset(torch.isin(held_out.labels, torch.tensor(labels)).nonzero().squeeze(1))
    count = min(len(members), len(held_out), max_reference)
    if count == 0:
        raise AuditError(f"{members.name}: no held-out samples with its labels {labels} to compare with")
    rng = torch.Generator().manual_seed(seed)
    member_images = to_unit_range(_subsample(members.images, count, rng))
    other_images = to_unit_range(_subsample(held_out.images, count, rng))
    fakes, member_rows, other_rows = generated.flatten(1), member_images.flatten(1), other_images.flatten(1)
    to_members, to_others = _nearest_distances(fakes, member_rows), _nearest_distances(fakes, other_rows)
    median_members, median_others = float(to_members.median()), float(to_others.median())
    result: dict[str, Any] = {
        "members": count, "non_members": count, "labels": labels,
        "median_distance_to_training": median_members, "median_distance_to_held_out": median_others,
        # None when generated samples coincide with the non-members (the ratio is unbounded, nothing memorized).
        "memorization_ratio": median_members / median_others if median_others > 0 else None,
        "closer_to_training": float((to_members < to_others).double().mean()),
        "membership_auc_distance": membership_auc(-_nearest_distances(member_rows, fakes),
                                                  -_nearest_distances(other_rows, fakes)),
        "membership_auc_discriminator": None,
    }
    if discriminator is not None:
        discriminator.eval()
        with torch.no_grad():
            result["membership_auc_discriminator"] = membership_auc(discriminator(member_images).flatten(),
                                                                    discriminator(other_images).flatten())
    return result


def audit_samples(generated: torch.Tensor, plan: DataPlan, held_out: LabelledImages, max_reference: int = 1000,
                  seed: int = 0, discriminators: dict[int, nn.Module] | None = None) -> dict[str, Any]:
    """Audit generated images against every party's share; returns per-party results and flags."""
    parties: dict[str, Any] = {}
    for party_id, index in enumerate(plan.shares.indices):
        share = plan.data.subset(index, name=f"party {party_id}")
        model = (discriminators or {}).get(party_id)
        parties[str(party_id)] = audit_party(generated, share, held_out, max_reference, seed + party_id, model)
    flags = []
    for party, result in parties.items():
        for attack in ("distance", "discriminator"):
            auc = result[f"membership_auc_{attack}"]
            if auc is not None and auc >= MEMBERSHIP_AUC_FLAG:
                flags.append(f"party {party}: membership inference ({attack} attack) AUC {auc:.3f} >= "
                             f"{MEMBERSHIP_AUC_FLAG}")
        if result["memorization_ratio"] is not None and result["memorization_ratio"] <= MEMORIZATION_RATIO_FLAG:
            flags.append(f"party {party}: memorization ratio {result['memorization_ratio']:.3f} <= "
                         f"{MEMORIZATION_RATIO_FLAG}: generated samples sit closer to its training data")
    aucs = [r[f"membership_auc_{a}"] for r in parties.values() for a in ("distance", "discriminator")
            if r[f"membership_auc_{a}"] is not None]
    ratios = [r["memorization_ratio"] for r in parties.values() if r["memorization_ratio"] is not None]
    return {
        "generated": len(generated), "parties": parties, "flags": flags,
        "worst": {"membership_auc": max(aucs), "memorization_ratio": min(ratios, default=None)},
        "thresholds": {"membership_auc": MEMBERSHIP_AUC_FLAG, "memorization_ratio": MEMORIZATION_RATIO_FLAG},
    }


def _newest_discriminator(run_dir: Path, config: Config, party: int, image_shape: tuple[int, int, int]) -> \
        nn.Module | None:
    """Party ``party``'s D from its newest intact checkpoint in the run folder (its own storage)."""
    try:
        tensors, _ = run_folder.newest_intact(run_folder.party_state_dir(run_dir, party))
    except CheckpointError:
        return None
    discriminator = build_models(config.model, image_shape).discriminator()
    discriminator.load_state_dict(unprefixed("discriminator", tensors))
    return discriminator


def audit_run(run_dir: Path, samples: int = 2000, max_reference: int = 1000, seed: int = 0,
              round_number: int | None = None, write: bool = True) -> dict[str, Any]:
    """Audit a run folder (newest checkpoint, or ``round_number``); writes ``RUN_DIR/audit.json``."""
    from distgan.sampling import generate, load_generator
    from distgan.strategies import STRATEGIES

    run_dir = Path(run_dir)
    generator, config, audited_round = load_generator(run_dir, round_number)
    plan = plan_data(config)
    held_out = non_members(config, plan)
    generated = generate(generator, samples, seed, config.model.latent_dim).float()
    image_shape = plan.data.shape
    # The centralized baseline's one party (folder party-0) holds every share.
    pooled = STRATEGIES.get(config.strategy.name).pooled_data if config.strategy.name in STRATEGIES else False
    discriminators = {}
    for party in range(len(plan.shares.indices)):
        model = _newest_discriminator(run_dir, config, 0 if pooled else party, image_shape)
        if model is not None:
            discriminators[party] = model
    result = audit_samples(generated, plan, held_out.images, max_reference, seed, discriminators)
    result = {"run_dir": str(run_dir), "round": audited_round, "strategy": config.strategy.name,
              "privacy": {"epsilon": config.privacy.epsilon, "noise_multiplier": config.privacy.noise_multiplier,
                          "mechanism": config.privacy.mechanism if config.privacy.enabled else None},
              "held_out": {"source": held_out.source, "count": len(held_out.images)}, **result}
    if write:
        atomic_write_text(run_dir / AUDIT_FILE, json.dumps(result, indent=1))
    return result

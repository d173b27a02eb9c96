"""The leakage audit flags a generator that returns training images and passes one that does not."""

from __future__ import annotations

import json

import pytest
import torch

from distgan.assembly import plan_data
from distgan.cli import main
from distgan.privacy.audit import AuditError, audit_samples, membership_auc, non_members
from distgan.training import train


def limited_config(make_config, **sections: object):
    config = make_config("avg-output", rounds=3, **sections)
    config.data.source, config.data.limit = "fake:n=400", 240  # 160 samples left out: the non-members
    return config


def unit(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


def test_membership_auc_is_the_mann_whitney_statistic() -> None:
    assert membership_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert membership_auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert membership_auc(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.625)


def test_non_members_are_the_samples_no_party_holds(make_config) -> None:
    config = limited_config(make_config)
    plan = plan_data(config)
    held_out = non_members(config, plan)
    assert len(held_out.images) == 160 and "data.limit=240" in held_out.source
    members = {bytes(row) for row in plan.data.images.flatten(1).numpy()}
    assert not any(bytes(row) in members for row in held_out.images.images.flatten(1).numpy())
    with pytest.raises(AuditError, match="data.limit"):
        non_members(make_config("avg-output"), plan_data(make_config("avg-output")))


def test_audit_flags_a_generator_that_returns_training_images(make_config) -> None:
    config = limited_config(make_config)
    plan = plan_data(config)
    held_out = non_members(config, plan).images
    party0 = plan.data.images[plan.shares.indices[0]]
    copying = audit_samples(unit(party0), plan, held_out)
    result = copying["parties"]["0"]
    assert result["membership_auc_distance"] > 0.99
    assert result["memorization_ratio"] < 0.01 and result["closer_to_training"] > 0.99
    assert any(flag.startswith("party 0: membership inference") for flag in copying["flags"])
    assert any(flag.startswith("party 0: memorization ratio") for flag in copying["flags"])
    # A "generator" that returns real images nobody trained on gives members away no more than chance.
    honest = audit_samples(unit(held_out.images), plan, held_out)
    for party in ("0", "1"):
        assert honest["parties"][party]["membership_auc_distance"] < 0.6
        ratio = honest["parties"][party]["memorization_ratio"]
        assert ratio is None or ratio > 1.0
    assert honest["flags"] == []


def test_audit_command_writes_audit_json_for_a_private_run(make_config, tmp_path, capsys) -> None:
    config = limited_config(make_config, privacy__epsilon=20.0)
    train(config, tmp_path, quiet=True)
    assert main(["audit", str(tmp_path), "--samples", "200"]) == 0
    out = capsys.readouterr().out
    assert "MIA AUC" in out and "wrote" in out
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert audit["round"] == 3 and audit["held_out"]["count"] == 160
    for party in ("0", "1"):
        result = audit["parties"][party]
        assert 0.0 <= result["membership_auc_distance"] <= 1.0
        assert result["membership_auc_discriminator"] is not None  # the party's own D, from its checkpoint
    report = (tmp_path / "report.html").read_text()
    assert "Leakage audit" in report and "Not audited yet" not in report
    assert f"{audit['parties']['0']['membership_auc_distance']:.4g}" in report
    assert main(["audit", str(tmp_path / "missing")]) == 2

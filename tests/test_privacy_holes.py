"""The guarantee against the coordinator (issue 13, part A): each test is a way a coordinator -- or an
honest crash -- could spend more privacy than a party's ledger shows, and each failed before the fix.

The adversary here sends whatever requests it likes: it rolls a party back (LoadState to an old round)
and replays, repeats requests, re-plans the noise, knows the run's seed, and reads every error text.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant

from distgan import protocol as p
from distgan.assembly import build_party, plan_data
from distgan.config import Config, PrivacyConfig
from distgan.party import Party, flat_parameters
from distgan.training import train
from tests.conftest import tiny_config

SIGMA = 1.0


def private_config(sigma: float = SIGMA, **sections: object) -> Config:
    return tiny_config("avg-output", privacy__noise_multiplier=sigma, **sections)


def make_party(config: Config, run_dir: Path, party_id: int = 0) -> Party:
    """A party as the runtimes build it (its journal in ``run_dir/parties/party-J``); a second call on the
    same folder is the same data holder after a restart."""
    return build_party(config, plan_data(config), party_id, run_dir)


def generated(party: Party, seed: int = 0) -> torch.Tensor:
    shape = party.expectations.image_shape
    return torch.rand(1, 8, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def steps_at(run_dir: Path, sigma: float, party_id: int = 0) -> int:
    """Mechanism steps at noise ``sigma`` in the party's ledger file."""
    from distgan.privacy.journal import PrivacyJournal

    journal = PrivacyJournal(run_dir / "parties" / f"party-{party_id}")
    return sum(steps for noise, _, steps in journal.history if noise == sigma)


def test_a_rolled_back_party_spends_afresh_and_its_ledger_shows_every_step(tmp_path) -> None:
    """LoadState to an old round, then the same request again: the ledger keeps the first step (a load
    never rewinds it) and the second step draws new noise and a new Poisson sample (no restored RNG)."""
    party = make_party(private_config(), tmp_path)
    party.handle(p.SaveState(0))
    request = p.TrainDiscriminator(generated(party), feedback=True)
    first = party.handle(request)
    after_first = flat_parameters(party.discriminator)
    party.handle(p.LoadState(0))
    second = party.handle(request)
    after_second = flat_parameters(party.discriminator)
    assert isinstance(first, p.Feedback) and isinstance(second, p.Feedback)
    assert second.stats.epsilon > first.stats.epsilon > 0, "the load rewound the ledger"
    assert not torch.equal(after_first, after_second), "the load replayed the noise of a released step"
    assert steps_at(tmp_path, SIGMA) == 2


def test_the_same_noise_under_two_noise_multipliers_is_impossible(tmp_path) -> None:
    """A resume that re-plans sigma (``--resume --rounds``) used to restore the noise stream: the same
    draw z under sigma_1 and sigma_2 reveals the un-noised sum. Now no checkpoint holds a random state,
    and the ledger composes both steps."""
    party = make_party(private_config(), tmp_path)
    party.handle(p.SaveState(0))
    request = p.TrainDiscriminator(generated(party), feedback=True)
    party.handle(request)
    record = json.loads((tmp_path / "parties" / "party-0" / "round-0000000.json").read_text())
    assert "secret_seed" not in json.dumps(record["meta"]) and "noise_device" not in json.dumps(record["meta"])
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "parties" / "party-0" / "round-0000000.safetensors")
    assert not [name for name in saved if name.startswith("privacy/")], sorted(saved)

    replanned = make_party(private_config(sigma=2.0), tmp_path)  # the same data holder, restarted
    replanned.handle(p.LoadState(0))
    reply = replanned.handle(request)
    assert isinstance(reply, p.Feedback)
    assert steps_at(tmp_path, SIGMA) == 1 and steps_at(tmp_path, 2.0) == 1
    assert replanned.privacy is not None
    rate = replanned.privacy.plan.sample_rate
    reference = RDPAccountant()
    reference.history = [(SIGMA, rate, 1), (2.0, rate, 1)]
    assert reply.stats.epsilon > reference.get_epsilon(delta=replanned.privacy.plan.target_delta)


def test_a_repeated_request_gets_its_first_reply_even_from_a_restarted_party(tmp_path) -> None:
    """An identified request answered once is answered again from the party's journal (a retry, a resumed
    coordinator, a Flower process per message): the same reply, no new noise, the ledger unmoved. The
    same id with other content is refused."""
    party = make_party(private_config(), tmp_path)
    request = p.TrainDiscriminator(generated(party), feedback=True, request_id="run/1.0")
    first = party.handle(request)
    restarted = make_party(private_config(), tmp_path)
    again = restarted.handle(request)
    assert isinstance(first, p.Feedback) and isinstance(again, p.Feedback)
    assert torch.equal(again.input_gradients, first.input_gradients) and again.stats == first.stats
    assert steps_at(tmp_path, SIGMA) == 1
    from distgan.privacy.mechanisms import RepeatRefused

    with pytest.raises(RepeatRefused, match="answered before with other content"):
        restarted.handle(dataclasses.replace(request, fakes=generated(party, seed=1)))
    # A new id is a new release: answered with fresh noise, and spent.
    restarted.handle(dataclasses.replace(request, request_id="run/2.0"))
    assert steps_at(tmp_path, SIGMA) == 2


def test_a_resumed_run_that_replans_its_noise_redoes_its_rounds_without_spending(make_config, tmp_path) -> None:
    """The rolling-back coordinator through the real loop: a run dies after round 5 (checkpoint at 3) and
    is resumed with another noise multiplier. Rounds 4 and 5 are repeated requests: the parties answer them
    from their journals, so the resumed run ends with exactly the ledger of an uninterrupted run."""
    config = make_config("avg-output", rounds=6, privacy__noise_multiplier=SIGMA)
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config, whole, quiet=True)
    shutil.copytree(whole, split)
    for path in (split / "checkpoints").glob("round-0000006.*"):
        path.unlink()  # as if the coordinator had died after round 5: resume from round 3

    def epsilons(run_dir: Path) -> list[float]:
        return [json.loads(line)["parties"]["0"]["epsilon"]
                for line in (run_dir / "stats.jsonl").read_text().splitlines()]

    config.privacy.noise_multiplier = 0.5  # re-planned: new noise for rounds already released
    train(config, split, resume=True, quiet=True)
    assert epsilons(split) == pytest.approx(epsilons(whole), rel=1e-12)
    assert steps_at(split, SIGMA) == 6 and steps_at(split, 0.5) == 0


def test_dropout_masks_under_dp_come_from_the_party_secret_stream(tmp_path) -> None:
    """Two parties built from the same public run seed: without DP they draw the same dropout masks (the
    runs are reproducible), under DP the coordinator cannot predict them."""
    public = tiny_config("avg-output", model__d_dropout=0.5)
    a, b = make_party(public, tmp_path / "a"), make_party(public, tmp_path / "b")
    request = p.QueryFeedback(generated(a))
    assert torch.equal(a.handle(request).logits, b.handle(request).logits)  # type: ignore[attr-defined]
    private = private_config(model__d_dropout=0.5)
    a, b = make_party(private, tmp_path / "c"), make_party(private, tmp_path / "d")
    assert not torch.equal(a.handle(request).logits, b.handle(request).logits)  # type: ignore[attr-defined]


def test_a_private_party_publishes_noisy_counts_once_and_spends_them(tmp_path) -> None:
    """Add/remove-one is the relation the accounting uses, so the exact count and label histogram may
    not leave: a private party publishes them noised (sensitivity 1), once per dataset, and its ledger
    holds that Gaussian release."""
    config = private_config()
    party = make_party(config, tmp_path)
    labels = party._data.labels
    exact = torch.bincount(labels, minlength=10)
    published = party.handle(p.Describe())
    assert isinstance(published, p.Description)
    assert not torch.equal(published.label_counts, exact), "the exact histogram left the party"
    assert published.samples == int(published.label_counts.sum())
    again = make_party(config, tmp_path).handle(p.Describe())  # restarted: the same release, not a new one
    assert isinstance(again, p.Description)
    assert torch.equal(again.label_counts, published.label_counts) and again.samples == published.samples
    assert steps_at(tmp_path, config.privacy.count_noise) == 1
    # The plan uses the published count: the sample rate is batch / published count.
    assert party.privacy is not None
    assert party.privacy.plan.sample_rate == pytest.approx(config.train.batch_size / published.samples)


def test_a_private_party_withholds_its_error_texts(tmp_path, monkeypatch) -> None:
    """An exception's text may quote private values: under DP only its type leaves the party."""
    party = make_party(private_config(), tmp_path)

    def failing(request: p.QueryFeedback) -> p.Message:
        raise RuntimeError("record 17 has pixel value 0.123456")

    monkeypatch.setitem(party._handlers, p.QueryFeedback, failing)
    with pytest.raises(Exception, match="RuntimeError") as raised:
        party.handle(p.QueryFeedback(generated(party)))
    assert "0.123456" not in str(raised.value) and "record 17" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_secure_mode_is_offered_and_says_what_it_needs() -> None:
    try:
        import torchcsprng  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="privacy.secure_mode=true needs the torchcsprng package"):
            PrivacyConfig(epsilon=1.0, secure_mode=True)
    else:
        assert PrivacyConfig(epsilon=1.0, secure_mode=True).secure_mode


# -- Flower: the node, not the coordinator, fixes its privacy -----------------------------------------------
def floor_node_config(tmp_path: Path, **floor: object) -> dict[str, object]:
    return {"partition-id": 0, "state-dir": str(tmp_path / "node"), "privacy-epsilon": 10.0, **floor}


def test_a_node_refuses_a_run_that_asks_for_less_privacy_than_its_floor(tmp_path) -> None:
    """A SuperNode's own config fixes the least privacy of every run on its data; the coordinator's
    greeting asks for a config, and a weaker one is refused with a message naming both numbers."""
    from distgan.runtime.flower.node import NodeSettings, PrivacyFloorRefusal, build_node_party

    node_config = floor_node_config(tmp_path, **{"privacy-delta": 1e-5, "privacy-max-grad-norm": 1.0,
                                                 "privacy-mechanisms": "dp-sgd"})

    def join(config: Config) -> Party:
        return build_node_party(config, NodeSettings.from_node_config(node_config, config, run_id=1))

    weaker = [(tiny_config("avg-output", privacy__epsilon=50.0), "privacy.epsilon=50, but .* at most epsilon 10"),
              (tiny_config("avg-output"), "no differential privacy"),
              (tiny_config("avg-output", privacy__epsilon=5.0, privacy__delta=1e-3), "privacy.delta=0.001"),
              (tiny_config("avg-output", privacy__epsilon=5.0, privacy__max_grad_norm=4.0), "max_grad_norm=4"),
              (tiny_config("avg-output", privacy__epsilon=5.0, privacy__mechanism="gradient-sanitizer"),
               "mechanism 'gradient-sanitizer'.* allows only dp-sgd")]
    for config, refusal in weaker:
        with pytest.raises(PrivacyFloorRefusal, match=refusal):
            join(config)
    party = join(tiny_config("avg-output", privacy__epsilon=10.0))
    assert party.privacy is not None and party.privacy.plan.epsilon_budget == 10.0
    # A run that gives only a noise multiplier gets the node's budget (and delta) anyway.
    party = join(tiny_config("avg-output", privacy__noise_multiplier=1.0))
    assert party.privacy is not None
    assert party.privacy.plan.epsilon_budget == 10.0 and party.privacy.plan.target_delta == 1e-5


def test_the_floor_refusal_is_the_greeting_reply_the_coordinator_logs(tmp_path) -> None:
    """Through the ClientApp's greeting: the refusal is raised there, and the app turns it into the
    error reply whose reason the coordinator logs as ``node N refused to join: ...``."""
    pytest.importorskip("flwr")
    from flwr.app import ConfigRecord, Context, RecordDict

    from distgan.runtime.flower.client import HELLO_RECORD, _hello
    from distgan.runtime.flower.node import PrivacyFloorRefusal

    config = tiny_config("avg-output", privacy__epsilon=50.0)
    context = Context(run_id=1, node_id=7, node_config=floor_node_config(tmp_path),  # type: ignore[arg-type]
                      state=RecordDict(), run_config={})
    greeting = RecordDict({HELLO_RECORD: ConfigRecord({"session": "s", "config": config.to_json()})})
    with pytest.raises(PrivacyFloorRefusal, match="asks for privacy.epsilon=50, but this node's privacy floor"):
        _hello(greeting, context, None)


def test_a_second_run_on_the_same_node_data_spends_from_the_same_ledger(tmp_path) -> None:
    """One ledger per dataset across runs: the second run starts where the first stopped, gets the same
    published counts (not a new release), and its party refuses once the node's budget is spent."""
    from distgan.runtime.flower.node import NodeSettings, build_node_party

    # A small count noise keeps the published count near 120 (about 50 affordable steps at epsilon 4);
    # the default's sd of 20 per label could publish 300 and afford several hundred.
    config = tiny_config("avg-output", privacy__noise_multiplier=1.0, privacy__count_noise=2.0)
    node_config = floor_node_config(tmp_path, **{"privacy-epsilon": 4.0})
    first = build_node_party(config, NodeSettings.from_node_config(node_config, config, run_id=1))
    described = first.handle(p.Describe())
    request = p.TrainDiscriminator(generated(first), feedback=True)
    spent = [first.handle(request).stats.epsilon for _ in range(2)]  # type: ignore[attr-defined]
    second = build_node_party(config, NodeSettings.from_node_config(node_config, config, run_id=2))
    again = second.handle(p.Describe())
    assert isinstance(described, p.Description) and isinstance(again, p.Description)
    assert torch.equal(again.label_counts, described.label_counts)
    reply = second.handle(request)
    assert isinstance(reply, p.Feedback) and reply.stats.epsilon > spent[-1]
    from distgan.privacy.accounting import PrivacyBudgetExhausted

    with pytest.raises(PrivacyBudgetExhausted, match="privacy budget used up"):
        for _ in range(1000):
            second.handle(request)
    assert second.privacy is not None and second.privacy.ledger.epsilon <= 4.0


def test_supernode_privacy_floor_option_becomes_node_config(tmp_path, monkeypatch) -> None:
    from distgan.cli import main
    from distgan.runtime.flower import supervise

    started: list[list[str]] = []
    monkeypatch.setattr(supervise, "supervise", lambda command, environment: started.append(command) or 0)
    assert main(["flower", "supernode", "--superlink", "127.0.0.1:9092", "--insecure", "--party", "0", "--parties",
                 "2", "--data", "fake", "--state-dir", str(tmp_path), "--privacy-floor",
                 "epsilon=10,delta=1e-5,max-grad-norm=1,mechanisms=dp-sgd"]) == 0
    node_config = started[0][started[0].index("--node-config") + 1]
    assert "privacy-epsilon=10.0" in node_config and "privacy-delta=1e-05" in node_config
    assert "privacy-max-grad-norm=1.0" in node_config and "privacy-mechanisms='dp-sgd'" in node_config
    for bad in ("epsilon=ten", "budget=3", "delta=1e-5"):
        assert main(["flower", "supernode", "--superlink", "127.0.0.1:9092", "--insecure", "--party", "0",
                     "--parties", "2", "--data", "fake", "--state-dir", str(tmp_path), "--privacy-floor", bad]) != 0


def test_the_ledger_file_only_grows_a_cut_line_is_skipped_and_fixed_ids_are_kept(tmp_path) -> None:
    """The journal's file is appended to, never rewritten (a load or a checkpoint leaves what is written
    as it was); a last line cut by a crash belongs to a reply that never left and is skipped; replies to
    ids not of the SESSION/ROUND.INDEX form (a one-shot release) survive every pruning."""
    from distgan.privacy.journal import LEDGER_FILE, PrivacyJournal

    party = make_party(private_config(), tmp_path)
    ledger = tmp_path / "parties" / "party-0" / LEDGER_FILE
    party.handle(p.SaveState(0))
    party.handle(p.TrainDiscriminator(generated(party), feedback=True, request_id="s/1.0"))
    written = ledger.read_text()
    party.handle(p.LoadState(0))
    party.handle(p.SaveState(1))
    party.handle(p.TrainDiscriminator(generated(party), feedback=True, request_id="s/2.0"))
    assert ledger.read_text().startswith(written) and len(ledger.read_text()) > len(written)

    journal = PrivacyJournal(ledger.parent)
    release = p.DiscriminatorStats(d_fake=0.5, steps=1)
    journal.record("dp-merf/abc", "test.release", "d", [(3.0, 1.0, 1)])
    journal.keep_reply("dp-merf/abc", release, pinned=True)
    journal.prune_replies("s", before_round=5)
    assert journal.cached_reply("dp-merf/abc") == release
    assert journal.cached_reply("s/1.0") is None  # before the oldest kept checkpoint: gone
    with ledger.open("a") as stream:
        stream.write('{"request": "s/3.0", "kind": "train.discriminator", "spent": [[1.0, 0.1')  # cut short
    reread = PrivacyJournal(ledger.parent)
    assert reread.history == journal.history and reread.answered("s/3.0") is None
    reread.record("s/4.0", "train.discriminator", "", [(1.0, 0.1, 1)])  # appends after the cut line
    assert PrivacyJournal(ledger.parent).answered("s/4.0") is not None

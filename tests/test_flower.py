"""Flower runtime: records, and one simulation (Ray starts once, ~25 s) that runs every strategy
for parity with the in-process runtime, then the fault cases.

Parity runs with ``keep_live=False``: every message rebuilds its party from Flower's node context,
as each new ClientApp process does in deployment, so equal numbers also prove the party's state
(D, optimizer, RNG, local G) survives between messages.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("flwr")

import distgan.runtime.flower  # noqa: F401  (Flower's environment before flwr is imported)
from distgan import protocol as p
from distgan import training
from distgan.parties import PartyFailedError
from distgan.runtime.flower.client import SESSION_RECORD
from distgan.runtime.flower.parties import FlowerSettings
from distgan.runtime.flower.records import from_content, to_content
from distgan.runtime.flower.server import ServerRun, run_on_grid
from distgan.runtime.flower.simulation import RayResources, gpu_share, server_app_of
from distgan.strategies import STRATEGIES
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # Ray's notice about GPU env vars

NOT_COMPARED = {"seconds", "elapsed_s", "overhead_s", "overhead_share", "party_compute_s", "messages"}


# -- records ---------------------------------------------------------------------------------------
def _examples() -> list[p.Message]:
    stats = p.DiscriminatorStats(d_loss=0.5, d_real=0.7, d_fake=0.2, steps=2, epsilon=0.0)
    fakes = torch.randn(2, 3, 1, 4, 4)
    weights = {"layers.0.weight": torch.randn(3, 2), "layers.0.bias": torch.randn(3),
               "layers.1.num_batches_tracked": torch.tensor(7)}  # 0-dim tensors keep their shape
    return [
        p.TrainDiscriminator(fakes, feedback=True), p.QueryFeedback(fakes),
        p.TrainAndUpload(fakes, 0.1, "largest", torch.tensor([0, 3]), torch.tensor([0.5, -0.5])),
        p.TrainLocalGAN(steps=2, generator=weights, discriminator=weights), p.ExportDiscriminator(),
        p.ImportDiscriminator(weights), p.SaveState(3), p.LoadState(3), p.Describe(), stats,
        p.Feedback(stats, torch.randn(2, 3), torch.randn(2, 3, 1, 4, 4)),
        p.DeltaUpload(stats, torch.tensor([1, 2]), torch.tensor([0.1, 0.2])),
        p.WeightsReply(stats, generator=weights, g_loss=0.3),
        p.Description(5, torch.tensor([2, 3]), torch.tensor([1, 4, 4])), p.Ack(),
        p.ReleaseEmbedding(feature_seed=3, features=4, lengthscale=2.5, num_labels=2),
        p.EmbeddingRelease(torch.randn(5, 2), feature_seed=3, features=4, lengthscale=2.5, epsilon=1.5),
        p.ReleaseEmbedding(feature_seed=3, features=4, lengthscale=2.5, num_labels=2, extra_lengthscales="1.25"),
        p.EmbeddingRelease(torch.randn(5, 2), feature_seed=3, features=4, lengthscale=2.5, epsilon=1.5,
                           extra_lengthscales="1.25"),
    ]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, p.Message):
        return type(a) is type(b) and all(_same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("message", _examples(), ids=lambda m: m.kind)
def test_every_message_survives_flower_records(message):
    assert _same(from_content(to_content(message, {"session": "s"})), message)


def test_records_refuse_what_is_not_a_protocol_message():
    from flwr.app import Array, ArrayRecord, ConfigRecord

    content = to_content(p.TrainDiscriminator(torch.randn(1, 2, 1, 4, 4)))
    content["extra"] = ConfigRecord({"x": 1})
    with pytest.raises(p.ProtocolError, match="unexpected records"):
        from_content(content)
    content = to_content(p.SaveState(1))
    content.config_records["scalars"]["round"] = [1, 2]
    with pytest.raises(p.ProtocolError, match="not allowed"):
        from_content(content)
    content = to_content(p.Describe())
    content.array_records["tensors"] = ArrayRecord({"sneaky": Array(torch.zeros(2).numpy())})
    with pytest.raises(p.ProtocolError, match="unexpected field"):
        from_content(content)
    content = to_content(p.Ack())
    content.config_records["envelope"]["kind"] = "reply.samples"
    with pytest.raises(p.ProtocolError, match="unknown message kind"):
        from_content(content)


# -- one simulation: parity for every strategy, then faults ----------------------------------------
def parity_config(strategy: str, **sections: object):
    return tiny_config(strategy, rounds=3, **{"train__local_steps": 2, "output__checkpoint_every": 2,
                                              "strategy__swap_every": 2, **sections})


PRIVATE = {"privacy__noise_multiplier": 1.0}
"""DP-SGD in every party: its privacy ledger and noise state must survive between messages too."""


PRIVATE_RELEASE = {"privacy__epsilon": 5.0, "strategy__random_features": 64}
"""dp-merf under DP: one Gaussian release per party, in one round trip, cached in the node's state."""


def _fault_mod(message, context, call_next):
    """Party 1 fails from its second training message on, in sessions named fault-*; in sessions
    named fault-lost-*, its node is gone for one training message after its first checkpoint (Flower's
    NODE_UNAVAILABLE) and back after."""
    record = context.state.config_records.get(SESSION_RECORD)
    if (record is not None and str(record["session"]).startswith("fault-lost") and context.node_config["partition-id"] == 1
            and message.metadata.message_type == "train.discriminator" and int(record["version"]) >= 3
            and f"fired-{record['session']}" not in context.state.config_records):
        from flwr.app import ConfigRecord, Error, Message
        from flwr.common.constant import ErrorCode

        context.state[f"fired-{record['session']}"] = ConfigRecord({"fired": True})
        return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="injected: node offline"), reply_to=message)
    if record is not None and str(record["session"]).startswith("fault-lost"):
        return call_next(message, context)
    if (record is not None and str(record["session"]).startswith("fault-") and context.node_config["partition-id"] == 1
            and message.metadata.message_type.startswith("train.") and int(record["version"]) >= 2):
        if str(record["session"]).startswith("fault-stall"):
            time.sleep(4.0)
        else:
            raise RuntimeError("injected fault: the node's ClientApp crashed")
    return call_next(message, context)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("flower-sim")
    outcomes: dict[str, Any] = {}
    fault = parity_config("round-robin")
    runs = {name: ServerRun(parity_config(name), root / "flower" / name) for name in STRATEGIES.names()}
    runs["private"] = ServerRun(parity_config("avg-output", **PRIVATE), root / "flower" / "private")
    runs["private-dp-merf"] = ServerRun(parity_config("dp-merf", **PRIVATE_RELEASE), root / "flower" / "private-dp-merf")
    # A run stopped after round 2 and resumed on Flower (parties reload their checkpoints).
    runs["resume-first"] = ServerRun(parity_config("avg-output", train__rounds=2), root / "flower" / "resumed")
    runs["resume-second"] = ServerRun(parity_config("avg-output"), root / "flower" / "resumed", resume=True)
    runs["fault-error"] = ServerRun(fault, root / "flower" / "fault-error")
    stop = parity_config("round-robin", runtime__on_party_failure="stop")
    runs["fault-stop"] = ServerRun(stop, root / "flower" / "fault-stop")
    lost = parity_config("round-robin", train__rounds=5, output__checkpoint_every=1)
    runs["fault-lost-continue"] = ServerRun(lost, root / "flower" / "fault-lost-continue")
    lost_wait = parity_config("round-robin", train__rounds=3, runtime__on_party_failure="wait")
    runs["fault-lost-wait"] = ServerRun(lost_wait, root / "flower" / "fault-lost-wait")
    runs["fault-stall"] = ServerRun(fault, root / "flower" / "fault-stall", settings=FlowerSettings(reply_timeout_s=1.5))

    def main(grid):
        for name, run in runs.items():  # fault-stall last: its stalled actor writes the node's state late
            session = f"{name}-{id(run)}" if name.startswith("fault-") else None
            try:
                outcomes[name] = run_on_grid(grid, run, session=session)
            except Exception as error:  # noqa: BLE001  recorded for the tests; a real ServerApp lets it end the run
                outcomes[name] = error

    from distgan.runtime.flower.simulation import run_in_simulation

    started = time.perf_counter()
    run_in_simulation(server_app_of(main), nodes=2, resources=RayResources(total_cpus=2),
                      state_root=root / "nodes", keep_live=False, mods=[_fault_mod])
    outcomes["simulation_s"] = time.perf_counter() - started
    return {"root": root, "outcomes": outcomes}


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def _assert_close(local: Any, flower: Any, where: str, rel_tol: float = 1e-4) -> None:
    if isinstance(local, dict):
        assert isinstance(flower, dict), where
        for key in local:
            if key not in NOT_COMPARED:
                assert key in flower, f"{where}.{key} missing in the Flower run"
                # The privacy ledger is deterministic; it must match exactly whatever the noise did.
                _assert_close(local[key], flower[key], f"{where}.{key}", 1e-9 if key == "epsilon" else rel_tol)
    elif isinstance(local, float) or isinstance(flower, float):
        assert math.isclose(local, flower, rel_tol=rel_tol, abs_tol=1e-5), f"{where}: {local} != {flower}"
    else:
        assert local == flower, f"{where}: {local!r} != {flower!r}"


def _assert_epsilon_replays(config: Any, run_dir: Path, records: list[dict[str, Any]]) -> None:
    from distgan.privacy.accounting import PrivacyLedger, make_plan, mechanism_steps_per_round

    published = json.loads((run_dir / "parties.json").read_text())
    for record in records:
        for party, stats in record["parties"].items():
            plan = make_plan(config, "dp-sgd", published[party]["samples"])
            steps = record["round"] * mechanism_steps_per_round(config, "dp-sgd")
            assert math.isclose(stats["epsilon"], PrivacyLedger(plan).epsilon_after(steps), rel_tol=1e-9), \
                f"{run_dir} round {record['round']} party {party}"


@pytest.mark.parametrize("strategy", [*STRATEGIES.names(), "private"])
def test_flower_simulation_equals_in_process(simulated, strategy):
    outcome = simulated["outcomes"][strategy]
    assert not isinstance(outcome, Exception), f"{strategy} failed on Flower: {outcome!r}"
    local_dir = simulated["root"] / "local" / strategy
    local_dir.mkdir(parents=True)
    config = parity_config("avg-output", **PRIVATE) if strategy == "private" else parity_config(strategy)
    training.train(config, local_dir, quiet=True)
    local, flower = _records(local_dir), _records(simulated["root"] / "flower" / strategy)
    assert len(local) == len(flower) == 3
    # Under DP each party's noise comes from a seed secret to it (OS entropy, see privacy/mechanisms.py),
    # and so do the counts it publishes, which set its sample rate: two private runs share everything but
    # the noise, so losses agree only loosely, and each run's epsilon is exactly the replay of its own
    # published counts (the ledger survived every message).
    tolerance = 5e-2 if strategy == "private" else 1e-4
    if strategy == "private":
        for run_dir, records in ((local_dir, local), (simulated["root"] / "flower" / strategy, flower)):
            _assert_epsilon_replays(config, run_dir, records)
            for record in records:
                for stats in record["parties"].values():
                    del stats["epsilon"]
    for round_local, round_flower in zip(local, flower):
        _assert_close(round_local, round_flower, f"{strategy} round {round_local['round']}", tolerance)
        # dp-merf's rounds after the release send nothing: post-processing on the platform
        assert 0 <= round_flower["overhead_share"] <= 1 and round_flower["messages"] >= (1 if round_flower["parties"] else 0)
    assert (simulated["root"] / "flower" / strategy / "checkpoints" / "round-0000003.json").is_file()


def test_a_private_dp_merf_run_releases_once_per_node_on_flower(simulated):
    outcome = simulated["outcomes"]["private-dp-merf"]
    assert not isinstance(outcome, Exception), f"private dp-merf failed on Flower: {outcome!r}"
    local_dir = simulated["root"] / "local" / "private-dp-merf"
    local_dir.mkdir(parents=True)
    training.train(parity_config("dp-merf", **PRIVATE_RELEASE), local_dir, quiet=True)
    local, flower = _records(local_dir), _records(simulated["root"] / "flower" / "private-dp-merf")
    assert len(local) == len(flower) == 3
    # Round 1 is the one round trip to each party; its ledger entry is exactly one Gaussian release.
    assert {j: s["epsilon"] for j, s in flower[0]["parties"].items()} == \
        {j: s["epsilon"] for j, s in local[0]["parties"].items()}
    assert all(0 < s["epsilon"] <= 5.0 for s in flower[0]["parties"].values())
    assert all(not record["parties"] for record in flower[1:])


def test_a_flower_run_resumes_where_it_stopped(simulated):
    for name in ("resume-first", "resume-second"):
        assert not isinstance(simulated["outcomes"][name], Exception), simulated["outcomes"][name]
    resumed = _records(simulated["root"] / "flower" / "resumed")
    whole = _records(simulated["root"] / "flower" / "avg-output")
    assert [r["round"] for r in resumed] == [1, 2, 3]
    for round_whole, round_resumed in zip(whole, resumed):
        _assert_close(round_whole, round_resumed, f"resumed round {round_whole['round']}")


def test_a_failing_node_is_left_out_and_the_run_goes_on(simulated):
    outcome = simulated["outcomes"]["fault-error"]
    assert not isinstance(outcome, Exception), outcome
    records = _records(simulated["root"] / "flower" / "fault-error")
    assert [r["failed_parties"] for r in records] == [[], [1], [1]]
    assert set(records[-1]["parties"]) == {"0"}
    assert "injected fault" in outcome.parties.failed[1]
    log = (simulated["root"] / "flower" / "fault-error" / "log.txt").read_text()
    assert "party 1 failed and is left out" in log


def test_a_node_that_comes_back_is_re_admitted_at_the_next_round(simulated):
    """on_party_failure=continue: party 1's node is gone for one message (round 2); when it answers the
    greeting again it rejoins, from its own checkpoint, and trains in the following rounds."""
    outcome = simulated["outcomes"]["fault-lost-continue"]
    assert not isinstance(outcome, Exception), outcome
    records = _records(simulated["root"] / "flower" / "fault-lost-continue")
    failed = [r["failed_parties"] for r in records]
    assert failed[:2] == [[], [1]] and failed[-1] == [] and sorted(records[-1]["parties"]) == ["0", "1"]
    log = (simulated["root"] / "flower" / "fault-lost-continue" / "log.txt").read_text()
    assert "party 1 failed and is left out" in log and "party 1 is back" in log and "re-admitted from round" in log
    assert "resumes from its own state of round 1" in log


def test_with_wait_the_run_waits_for_a_lost_node_and_repeats_the_request(simulated):
    outcome = simulated["outcomes"]["fault-lost-wait"]
    assert not isinstance(outcome, Exception), outcome
    records = _records(simulated["root"] / "flower" / "fault-lost-wait")
    assert [r["failed_parties"] for r in records] == [[], [], []]
    assert all(sorted(r["parties"]) == ["0", "1"] for r in records)
    log = (simulated["root"] / "flower" / "fault-lost-wait" / "log.txt").read_text()
    assert "waiting up to" in log and "party 1 is back" in log


def test_a_failing_node_stops_the_run_when_configured(simulated):
    outcome = simulated["outcomes"]["fault-stop"]
    assert isinstance(outcome, PartyFailedError) and "injected fault" in str(outcome)


def test_a_silent_node_times_out(simulated):
    outcome = simulated["outcomes"]["fault-stall"]
    assert not isinstance(outcome, Exception), outcome
    log = (simulated["root"] / "flower" / "fault-stall" / "log.txt").read_text()
    assert "PartyTimeoutError: node" in log and "no reply within 1.5 s" in log
    # Silence counts as a lost node: left out, and greeted again (it answers, being only slow).
    assert [1] in [r["failed_parties"] for r in _records(simulated["root"] / "flower" / "fault-stall")]


def test_parties_meant_for_cuda_reserve_a_gpu_share_in_simulation():
    """Ray hides every GPU from an actor that reserves none: a CUDA run must give its nodes a share."""
    def share(device: str, requested: float | None, cuda_available: bool = True) -> float:
        return gpu_share(tiny_config(runtime__device=device), requested, nodes=4, cuda_available=cuda_available)

    assert share("cuda", None) == share("auto", None) == 0.25
    assert share("auto", None, cuda_available=False) == share("cpu", None) == 0.0
    assert share("cuda", 0.5) == 0.5 and share("auto", 0.0) == 0.0  # an explicit share is kept
    with pytest.raises(ValueError, match="--gpus-per-party 0: Ray hides the GPU"):
        share("cuda", 0.0)
    assert RayResources().backend_config()["client_resources"]["num_gpus"] == 0.0

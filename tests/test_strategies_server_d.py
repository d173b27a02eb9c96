"""server-d (Alg. 1): the server's max, mean and sum rules, upload selection, download choice, one round."""

from __future__ import annotations

import math

import pytest
import torch

from distgan import protocol as p
from distgan.party import build_discriminator, flat_parameters
from distgan.strategies.server_d import (
    SERVER_UPDATES,
    DownloadSchedule,
    biggest_delta,
    checked_upload,
    mean_delta,
    summed_delta,
)
from tests.conftest import tiny_config
from tests.test_strategies import build_run, flat

# Two hand-made uploads into a 6-entry D vector; entries 2 and 3 come from both parties.
UPLOADS = [(torch.tensor([0, 2, 3]), torch.tensor([1.0, -3.0, 0.5])),
           (torch.tensor([2, 3, 5]), torch.tensor([2.0, -0.7, 4.0]))]


def test_max_rule_takes_the_delta_of_largest_magnitude_per_entry():
    indices, delta = biggest_delta(UPLOADS, 6)
    assert indices.tolist() == [0, 2, 3, 5]
    assert delta.tolist() == pytest.approx([1.0, -3.0, -0.7, 4.0])  # sign kept: -3 beats 2, -0.7 beats 0.5


def test_mean_rule_averages_over_the_parties_that_uploaded_each_entry():
    indices, delta = mean_delta(UPLOADS, 6)
    assert indices.tolist() == [0, 2, 3, 5]
    assert delta.tolist() == pytest.approx([1.0, -0.5, -0.1, 4.0])  # not diluted by parties that did not send


def test_sum_rule_adds_every_upload_as_shokri_and_shmatikovs_server_does():
    indices, delta = summed_delta(UPLOADS, 6)
    assert indices.tolist() == [0, 2, 3, 5]
    assert delta.tolist() == pytest.approx([1.0, -1.0, -0.2, 4.0])


def test_max_rule_breaks_ties_towards_the_first_party():
    tie = [(torch.tensor([1]), torch.tensor([2.0])), (torch.tensor([1]), torch.tensor([-2.0]))]
    assert biggest_delta(tie, 3)[1].tolist() == [2.0]


def test_uploads_with_bad_indices_are_refused():
    stats = p.DiscriminatorStats()
    with pytest.raises(p.ProtocolError, match="party 3.*outside"):
        checked_upload(3, p.DeltaUpload(stats, torch.tensor([0, 6]), torch.zeros(2)), 6)
    with pytest.raises(p.ProtocolError, match="party 1.*repeat"):
        checked_upload(1, p.DeltaUpload(stats, torch.tensor([2, 2]), torch.zeros(2)), 6)


@pytest.mark.parametrize("rule", ["max", "mean", "sum"])
def test_round_moves_the_server_d_by_the_combined_uploads_only(tmp_path, rule):
    run = build_run(tiny_config("server-d", strategy__server_update=rule, strategy__upload_fraction=0.05),
                    tmp_path)
    server_before = flat(run.strategy.server_d)
    run.round()
    uploads = run.replies(p.DeltaUpload)
    assert sorted(uploads) == [0, 1]
    rule_function = SERVER_UPDATES[rule]
    indices, delta = rule_function([(u.indices, u.values) for u in uploads.values()],  # type: ignore[attr-defined]
                                   server_before.numel())
    expected = server_before.clone()
    expected[indices] += delta
    server_after = flat(run.strategy.server_d)
    torch.testing.assert_close(server_after, expected)
    untouched = torch.ones_like(server_before, dtype=torch.bool)
    untouched[indices] = False
    assert torch.equal(server_after[untouched], server_before[untouched])
    # The parties trained their full D; the server only got 5 % of each: they differ.
    for party in run.parties:
        assert not torch.equal(flat(party.discriminator), server_after)


def party_upload(tmp_path, selection: str, fraction: float) -> tuple[p.DeltaUpload, torch.Tensor]:
    run = build_run(tiny_config("server-d"), tmp_path)
    party = run.parties[0]
    before = flat(party.discriminator)
    fakes = run.coordinator.trainer.fakes(1).images
    reply = party.handle(p.TrainAndUpload(fakes, upload_fraction=fraction, selection=selection))
    assert isinstance(reply, p.DeltaUpload)
    return reply, flat(party.discriminator) - before


def test_largest_selection_uploads_the_biggest_changes(tmp_path):
    reply, delta = party_upload(tmp_path, "largest", 0.1)
    assert len(reply.indices) == math.ceil(0.1 * delta.numel())
    torch.testing.assert_close(reply.values, delta[reply.indices])
    left_out = torch.ones_like(delta, dtype=torch.bool)
    left_out[reply.indices] = False
    assert float(reply.values.abs().min()) >= float(delta[left_out].abs().max())


def test_random_selection_uploads_a_random_subset(tmp_path):
    reply, delta = party_upload(tmp_path, "random", 0.1)
    assert len(reply.indices) == math.ceil(0.1 * delta.numel())
    assert len(reply.indices.unique()) == len(reply.indices)
    torch.testing.assert_close(reply.values, delta[reply.indices])
    largest = set(delta.abs().topk(len(reply.indices)).indices.tolist())
    overlap = len(largest & set(reply.indices.tolist())) / len(largest)
    assert overlap < 0.5  # a random 10 % shares about 10 % with the top 10 %


def test_download_sends_the_entries_that_moved_most_since_last_sent():
    schedule = DownloadSchedule(torch.zeros(6), parties=[0, 1], fraction=1 / 3)
    server = torch.tensor([0.0, 5.0, -1.0, 0.1, 0.0, 0.0])
    indices, values = schedule.choose(0, server)
    assert indices.tolist() == [1, 2] and values.tolist() == [5.0, -1.0]
    # Party 0 now holds those two; next time it gets the entry that moved most among the others.
    assert schedule.choose(0, server)[0].tolist()[0] == 3
    # Party 1 has been sent nothing yet: it gets the same first choice party 0 got.
    assert schedule.choose(1, server)[0].tolist() == [1, 2]


def test_download_request_carries_the_current_server_values(tmp_path):
    run = build_run(tiny_config("server-d", strategy__download_fraction=0.2), tmp_path)
    run.round()  # the server D moves
    server = flat(run.strategy.server_d)
    requests = {}
    run.handle.observers.append(lambda party, request, reply: requests.setdefault(party, request))
    run.round()
    request = requests[0]
    assert isinstance(request, p.TrainAndUpload) and request.download_indices is not None
    assert len(request.download_indices) == math.ceil(0.2 * server.numel())
    torch.testing.assert_close(request.download_values, server[request.download_indices])


def test_server_d_starts_from_the_parties_initial_d(tmp_path):
    run = build_run(tiny_config("server-d"), tmp_path)
    initial = flat_parameters(build_discriminator(run.coordinator.trainer.factory, 0))
    assert torch.equal(flat(run.strategy.server_d), initial)
    assert all(torch.equal(flat(party.discriminator), initial) for party in run.parties)

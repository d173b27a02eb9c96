"""The ``Parties`` handle: how strategies reach parties without knowing where they run.

A strategy hands a mapping ``party -> request`` to :meth:`Parties.request` and gets the replies of
the parties that answered well. Every reply is validated here, on receipt, and its bytes counted;
a party that raises, dies, or sends a malformed reply is marked failed with a message naming it,
and the round goes on with the others (``runtime.on_party_failure = "continue"``) or the run stops.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from distgan import protocol as p

log = logging.getLogger("distgan")


class PartyFailedError(RuntimeError):
    """A party failed and the run is configured to stop on failure (or none is left)."""


@dataclass
class Traffic:
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)

    def add(self, party: int, down: int, up: int) -> None:
        self.bytes_down[party] = self.bytes_down.get(party, 0) + down
        self.bytes_up[party] = self.bytes_up.get(party, 0) + up


class Parties(ABC):
    """All parties of a run, wherever they live."""

    def __init__(self, count: int, expectations: p.Expectations, stop_on_failure: bool = False) -> None:
        self.count = count
        self.expectations = expectations
        self.stop_on_failure = stop_on_failure
        self.failed: dict[int, str] = {}
        self.traffic = Traffic()
        self.observers: list[object] = []  # callables (party, request, reply) for audits and tests

    @property
    def active(self) -> list[int]:
        return [j for j in range(self.count) if j not in self.failed]

    def request(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message]:
        """Send each party its request (in parallel where the runtime can); return valid replies."""
        wanted = {j: r for j, r in requests.items() if j not in self.failed}
        outcomes = self._dispatch(wanted)
        replies: dict[int, p.Message] = {}
        for party, request in wanted.items():
            outcome = outcomes.get(party, PartyFailedError("no reply"))
            if isinstance(outcome, BaseException):
                self._fail(party, f"{type(outcome).__name__}: {outcome}")
                continue
            try:
                outcome.validate(f"party {party}", self.expectations)
            except p.ProtocolError as error:
                self._fail(party, f"malformed reply rejected: {error}")
                continue
            self.traffic.add(party, request.nbytes(), outcome.nbytes())
            for observer in self.observers:
                observer(party, request, outcome)  # type: ignore[operator]
            replies[party] = outcome
        if not self.active:
            raise PartyFailedError("every party has failed: " + "; ".join(
                f"party {j}: {why}" for j, why in sorted(self.failed.items())))
        return replies

    def request_all(self, request: p.Message, parties: list[int] | None = None) -> dict[int, p.Message]:
        return self.request({j: request for j in (self.active if parties is None else parties)})

    def _fail(self, party: int, why: str) -> None:
        self.failed[party] = why
        log.warning("party %d failed and is left out from now on: %s", party, why)
        if self.stop_on_failure:
            raise PartyFailedError(f"party {party} failed: {why}")

    @abstractmethod
    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        """Deliver requests; return each party's reply or the exception it raised."""

    def close(self) -> None:
        """Release processes or connections."""

    def __enter__(self) -> Parties:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

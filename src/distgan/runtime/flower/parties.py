"""``FlowerParties``: the ``Parties`` handle of a ServerApp, one SuperNode per party.

Start-up greets every node (``query.hello`` with the run's config); each answers with the party id
its node config names (``partition-id``) and its party's Description (which then answers the
coordinator's first Describe), so party j is always the node that says it is j, whatever node id
Flower gave it. Requests then go out with ``push_messages`` and replies are collected with
``pull_messages`` every ``poll_interval_s``, backing off by half per empty pull to at most
``REPLY_POLL_CAP_S`` (not ``send_and_receive``, which sleeps 3 s between pulls in deployment): a
quick reply is seen within tens of milliseconds, and a message that takes minutes is not polled
thousands of times, each poll a chance to catch a reply whose objects are still uploading (Flower's
Grid then waits 1 s or more for them). A reply that carries a Flower error, fails to decode, or comes from the wrong
node is that party's failure; a party silent for ``reply_timeout_s`` has failed too. The base class
then leaves it out and goes on (``runtime.on_party_failure = "continue"``) or stops the run.

Message overhead: for each request batch, wall time minus the longest time a party spent in
``Party.handle`` (the party reports it). :meth:`record_round` adds it to each round's stats line.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.app import DEFAULT_TTL, ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from distgan import protocol as p
from distgan.config import Config
from distgan.parties import Parties, PartyFailedError, PartyLostError
from distgan.runtime.flower.client import HELLO, HELLO_RECORD
from distgan.runtime.flower.records import envelope_of, from_content, to_content
from distgan.strategies import STRATEGIES

log = logging.getLogger("distgan")


class RemotePartyError(RuntimeError):
    """A party's node answered with an error (its ClientApp raised)."""


class NodeLostError(PartyLostError):
    """Flower could not deliver to the party's node or get its reply: the node is gone (it may come back)."""


class PartyTimeoutError(PartyLostError):
    """A party did not answer within the reply timeout."""


REPLY_POLL_CAP_S = 0.1
"""The longest wait between pulls for replies."""

LOST_NODE_ERRORS = frozenset({ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE,
                              ErrorCode.NODE_UNAVAILABLE, ErrorCode.CLIENT_APP_CRASHED})
"""Flower's error codes for a node (or its ClientApp process) that is gone rather than a party that failed."""
REGREET_EVERY_S = 10.0
"""How often nodes that might play a lost party (a restarted SuperNode) are greeted."""
GREETING_EXPIRES_S = 120.0
"""A greeting unanswered this long is dropped, and its node greeted again."""


@dataclass(frozen=True)
class FlowerSettings:
    reply_timeout_s: float | None = 900.0
    """Seconds to wait for a party's reply before it counts as failed; None waits as long as the
    message lives (Flower's TTL, 12 h)."""
    discovery_timeout_s: float = 600.0
    """Seconds to wait for every party's SuperNode to connect and answer the greeting."""
    poll_interval_s: float = 0.02
    """Seconds between pulls for replies at first (then backing off to ``REPLY_POLL_CAP_S``)."""

    def __post_init__(self) -> None:
        if self.reply_timeout_s is not None and not self.reply_timeout_s > 0:
            raise ValueError(f"reply-timeout={self.reply_timeout_s!r}: must be positive (0 in the run config waits)")
        if not self.discovery_timeout_s > 0:
            raise ValueError(f"discovery-timeout={self.discovery_timeout_s!r}: must be positive")
        if not 0 < self.poll_interval_s <= 5:
            raise ValueError(f"poll-interval={self.poll_interval_s!r}: must lie in (0, 5] seconds")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> FlowerSettings:
        """``reply-timeout`` (0: wait), ``discovery-timeout``, ``poll-interval`` from the Flower run config."""
        defaults = cls()
        reply = float(run_config.get("reply-timeout", defaults.reply_timeout_s or 0))
        return cls(reply_timeout_s=reply or None,
                   discovery_timeout_s=float(run_config.get("discovery-timeout", defaults.discovery_timeout_s)),
                   poll_interval_s=float(run_config.get("poll-interval", defaults.poll_interval_s)))


@dataclass
class _Exchange:
    """One request batch: when it ended, its wall time, the longest party compute, messages."""

    ended: float
    wall_s: float
    party_s: float
    messages: int


@dataclass
class OverheadLog:
    exchanges: list[_Exchange] = field(default_factory=list)
    rounds: list[dict[str, float]] = field(default_factory=list)


class FlowerParties(Parties):
    def __init__(self, grid: Grid, config: Config, settings: FlowerSettings | None = None,
                 session: str | None = None) -> None:
        count = 1 if STRATEGIES.get(config.strategy.name).pooled_data else config.data.parties
        # What replies must fit is known once the parties have described themselves (Parties.configure).
        super().__init__(count, None, config.runtime.on_party_failure == "stop")
        self.settings = settings or FlowerSettings()
        self.session = session or uuid.uuid4().hex[:12]
        self.overhead = OverheadLog()
        self._grid = grid
        self._greetings: dict[int, p.Message] = {}  # each party's Description, sent with its greeting
        self._config_json = config.to_json()
        self._rejoin_greetings: dict[str, tuple[int, float]] = {}  # message id -> (node, sent at)
        self._next_regreet = 0.0
        self._resume_checked = False
        self._lost: set[int] = set()  # parties whose node went away (not ones that answered badly)
        # "wait": a lost party's run waits for its node to come back (a restarted SuperNode).
        self.restart_lost = config.runtime.on_party_failure == "wait"
        timeout = self.settings.reply_timeout_s
        self._ttl = float(DEFAULT_TTL) if timeout is None else max(timeout + 60.0, 120.0)
        self.nodes: dict[int, int] = self._discover(config)
        log.info("Flower session %s: %s", self.session,
                 ", ".join(f"party {j} = node {node}" for j, node in sorted(self.nodes.items())))

    # -- start: who is who -------------------------------------------------------------------------
    def _greet(self, nodes: list[int]) -> dict[str, int]:
        """Send the greeting (session and config) to ``nodes``; message id -> node."""
        pending: dict[str, int] = {}
        for node in nodes:
            message = Message(RecordDict({HELLO_RECORD: ConfigRecord(
                {"session": self.session, "config": self._config_json})}), dst_node_id=node, message_type=HELLO,
                ttl=self._ttl)
            self._grid.push_messages([message])
            pending[message.metadata.message_id] = node
        return pending

    def _greeting_answer(self, node: int, reply: Message) -> tuple[int, p.Message] | str:
        """The party a node's answer to the greeting claims and its Description, or why it is refused."""
        if reply.has_error():
            return str(reply.error.reason)
        try:
            party = envelope_of(reply.content).get("party")
            description = from_content(reply.content)
        except p.ProtocolError as error:
            return f"malformed greeting: {error}"
        if not isinstance(party, int) or isinstance(party, bool) or not 0 <= party < self.count:
            return f"claims party {party!r}, outside 0..{self.count - 1}"
        return party, description

    def _discover(self, config: Config) -> dict[int, int]:
        started = time.perf_counter()
        deadline = started + self.settings.discovery_timeout_s
        greeted: set[int] = set()
        pending: dict[str, int] = {}  # message id -> node id
        refused: dict[int, str] = {}
        mapping: dict[int, int] = {}
        next_report = started + 10.0
        while len(mapping) < self.count:
            new_nodes = sorted(set(self._grid.get_node_ids()) - greeted)
            if new_nodes:
                greeted.update(new_nodes)
                pending.update(self._greet(new_nodes))
            for reply in self._grid.pull_messages(list(pending)):
                node = pending.pop(reply.metadata.reply_to_message_id, -1)
                if node < 0:
                    continue
                answer = self._greeting_answer(node, reply)
                if isinstance(answer, str):
                    refused[node] = answer
                    log.warning("node %d refused to join: %s", node, answer)
                    continue
                party, description = answer
                if party in mapping:
                    raise PartyFailedError(f"nodes {mapping[party]} and {node} both claim party {party}: "
                                           "give each SuperNode its own partition-id")
                mapping[party] = node
                self._greetings[party] = description
            now = time.perf_counter()
            if len(mapping) < self.count and now > deadline:
                detail = "; ".join(f"node {node}: {why}" for node, why in sorted(refused.items()))
                raise PartyFailedError(
                    f"only parties {sorted(mapping)} of {self.count} joined within "
                    f"{self.settings.discovery_timeout_s:g} s" + (f" (refused: {detail})" if detail else ""))
            if now > next_report:
                log.info("waiting for SuperNodes: %d of %d parties joined, %d nodes connected",
                         len(mapping), self.count, len(greeted))
                next_report = now + 30.0
            if len(mapping) < self.count:
                time.sleep(self.settings.poll_interval_s if pending else 0.5)
        return mapping

    # -- nodes that come back ----------------------------------------------------------------------
    def rejoin(self, wanted: set[int]) -> list[int]:
        """Greet the connected nodes that play no active party (a restarted SuperNode keeps its node
        id under node authentication, gets a new one without), at most every REGREET_EVERY_S, and
        collect answers; a node that answers as one of the ``wanted`` parties plays it from now on,
        its party rebuilt from its own last saved state (the node loads it when greeted). Does not
        wait; returns the parties that came back."""
        now = time.monotonic()
        back: list[int] = []
        if self._rejoin_greetings:
            for reply in self._grid.pull_messages(list(self._rejoin_greetings)):
                node, _ = self._rejoin_greetings.pop(reply.metadata.reply_to_message_id, (-1, 0.0))
                if node < 0:
                    continue
                answer = self._greeting_answer(node, reply)
                if isinstance(answer, str):
                    if not reply.has_error() or reply.error.code not in LOST_NODE_ERRORS:
                        log.warning("node %d answered the greeting but cannot rejoin: %s", node, answer)
                    continue
                party, _ = answer
                if party not in wanted:
                    continue  # a node of an active party (or one already back): nothing changes
                self.nodes[party] = node
                back.append(party)
                wanted = wanted - {party}
                resumed = envelope_of(reply.content).get("resumed_round")
                log.warning("party %d is back (node %d) and rejoins the run: its party resumes from its own state "
                            "of round %s", party, node, resumed if isinstance(resumed, int) else "0 (none saved)")
            self._rejoin_greetings = {m: (n, t) for m, (n, t) in self._rejoin_greetings.items()
                                      if now - t < GREETING_EXPIRES_S}
        if wanted and now >= self._next_regreet:
            self._next_regreet = now + REGREET_EVERY_S
            busy = {self.nodes[j] for j in range(self.count) if j not in wanted and j not in self.failed}
            busy |= {node for node, _ in self._rejoin_greetings.values()}
            candidates = sorted(set(self._grid.get_node_ids()) - busy)
            self._rejoin_greetings.update({m: (n, now) for m, n in self._greet(candidates).items()})
        return back

    def _restart(self, parties: list[int]) -> list[int]:
        """``on_party_failure = "wait"``: wait (up to the discovery timeout) for the lost parties'
        nodes to come back; returns those that did."""
        wanted, back = set(parties), []
        deadline = time.monotonic() + self.settings.discovery_timeout_s
        log.warning("parties %s lost their node: waiting up to %g s for it to come back (on_party_failure=wait)",
                    sorted(wanted), self.settings.discovery_timeout_s)
        while wanted and time.monotonic() < deadline:
            returned = self.rejoin(wanted)
            self._lost -= set(returned)
            back += returned
            wanted -= set(returned)
            if wanted:
                time.sleep(0.5)
        return back

    def readmit_returning(self, coordinator: object, round_number: int, record: dict[str, Any]) -> None:
        """Coordinator round hook: a party left out because its node went away (not one that answered
        badly) is re-admitted for the next round once its node is back and answers the greeting."""
        lost = set(self.failed) & self._lost  # a party that answered badly stays out
        if not lost:
            return
        for party in self.rejoin(lost):
            self._lost.discard(party)
            why = self.failed.pop(party)
            log.warning("party %d re-admitted from round %d on (it had failed: %s)", party, round_number + 1, why)

    def request(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message]:
        if not self._resume_checked and any(isinstance(r, p.LoadState) for r in requests.values()):
            # A resumed run: parties its checkpoint lists as failed but whose nodes answered the greeting
            # are back, with their own last saved state (loaded when greeted).
            self._resume_checked = True
            for party in sorted(set(self.failed) & set(self.nodes)):
                why = self.failed.pop(party)
                log.warning("party %d answered again and is re-admitted to the resumed run (it had failed: %s)",
                            party, why)
        return super().request(requests)

    @property
    def descriptions(self) -> dict[int, p.Message]:
        """The Descriptions the parties sent with their greeting (until the first Describe takes them)."""
        return dict(self._greetings)

    # -- requests ------------------------------------------------------------------------------------
    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        if requests and all(isinstance(r, p.Describe) and j in self._greetings for j, r in requests.items()):
            # The first Describe of a run: answered at the greeting already (a Description never changes).
            return {j: self._greetings.pop(j) for j in requests}
        started = time.perf_counter()
        outcomes: dict[int, p.Message | BaseException] = {}
        messages = {party: Message(to_content(request, {"session": self.session}), dst_node_id=self.nodes[party],
                                   message_type=request.kind, ttl=self._ttl, group_id=self.session)
                    for party, request in requests.items()}
        pushed = set(self._grid.push_messages(list(messages.values())))
        pending: dict[str, int] = {}
        for party, message in messages.items():
            if message.metadata.message_id in pushed:
                pending[message.metadata.message_id] = party
            else:
                outcomes[party] = RemotePartyError(f"the SuperLink did not accept the request for node "
                                                   f"{self.nodes[party]} (too large, or the node is gone)")
        party_seconds = 0.0
        timeout = self.settings.reply_timeout_s
        delay = self.settings.poll_interval_s
        while pending:
            for reply in self._grid.pull_messages(list(pending)):
                party = pending.pop(reply.metadata.reply_to_message_id, -1)
                if party < 0:
                    continue
                outcome, seconds = self._outcome(party, reply)
                outcomes[party] = outcome
                party_seconds = max(party_seconds, seconds)
            if pending and timeout is not None and time.perf_counter() - started > timeout:
                for party in pending.values():
                    outcomes[party] = PartyTimeoutError(f"node {self.nodes[party]} sent no reply within {timeout:g} s")
                break
            if pending:
                time.sleep(delay)
                delay = min(max(REPLY_POLL_CAP_S, self.settings.poll_interval_s), delay * 1.5)
        ended = time.perf_counter()
        self.overhead.exchanges.append(_Exchange(ended, ended - started, party_seconds, len(messages)))
        self._lost.update(j for j, outcome in outcomes.items() if isinstance(outcome, PartyLostError))
        return outcomes

    def _outcome(self, party: int, reply: Message) -> tuple[p.Message | BaseException, float]:
        node = self.nodes[party]
        if reply.has_error():
            kind = NodeLostError if reply.error.code in LOST_NODE_ERRORS else RemotePartyError
            return kind(f"node {node}: {reply.error.reason}"), 0.0
        if reply.metadata.src_node_id != node:
            return p.ProtocolError(f"reply for node {node} came from node {reply.metadata.src_node_id}"), 0.0
        try:
            envelope = envelope_of(reply.content)
            if envelope.get("session") != self.session or envelope.get("party") != party:
                raise p.ProtocolError(f"node {node}: reply for session {envelope.get('session')!r} party "
                                      f"{envelope.get('party')!r}, expected {self.session!r} party {party}")
            message = from_content(reply.content)
        except p.ProtocolError as error:
            return error, 0.0
        seconds = envelope.get("seconds", 0.0)
        valid = isinstance(seconds, float) and math.isfinite(seconds) and seconds >= 0
        return message, float(seconds) if valid else 0.0

    # -- overhead per round ----------------------------------------------------------------------------
    def record_round(self, coordinator: object, round_number: int, record: dict[str, Any]) -> None:
        """Coordinator round hook: adds ``overhead_s``, ``overhead_share``, ``party_compute_s``,
        ``messages``, ``exchanges`` (request batches) of this round's exchanges (a checkpoint's
        exchanges fall between rounds)."""
        round_started = time.perf_counter() - float(record["seconds"])
        exchanges = [e for e in self.overhead.exchanges if e.ended >= round_started]
        self.overhead.exchanges.clear()
        overhead = sum(max(0.0, e.wall_s - e.party_s) for e in exchanges)
        extra = {"overhead_s": overhead,
                 "overhead_share": overhead / record["seconds"] if record["seconds"] > 0 else 0.0,
                 "party_compute_s": sum(e.party_s for e in exchanges),
                 "messages": float(sum(e.messages for e in exchanges)),
                 "exchanges": float(len(exchanges))}
        record.update(extra)
        self.overhead.rounds.append(extra)

"""A private party's journal: its append-only privacy ledger on disk, and the replies it released.

A journal lives in a folder of its own next to the party's data and state: for the local runtimes
``RUN_DIR/parties/party-J``, for a Flower node ``<state-dir>/privacy/<dataset>`` (one journal per
dataset across runs, :mod:`distgan.runtime.flower.node`). It holds

- ``privacy-ledger.jsonl``: one JSON line per answered private request, appended and fsync'd
  *before* the reply leaves the party, never rewritten and never taken from a checkpoint: loading
  a checkpoint (``LoadState``), a restart or a new run cannot rewind it. A line::

      {"request": "SESSION/ROUND.INDEX", "kind": "train.discriminator", "digest": "<blake2b>",
       "spent": [[sigma, sample_rate, steps], ...], "at": "2026-12-02T17:30:00Z", ...extra}

  ``spent`` lists the Gaussian mechanism invocations the reply cost, in Opacus's RDP history form;
  the party's accountant is the concatenation of every line's ``spent``. A line whose write was cut
  (no newline at its end) belongs to a reply that never left the party: it is skipped.
- ``privacy-replies/``: the replies released to identified requests (``request_id`` of
  :data:`distgan.protocol.IDENTIFIED_REQUESTS`), so that a repeat (a retry, a resumed or rolled-back
  coordinator) gets the first reply, never new noise. Replies of rounds before the party's oldest
  kept checkpoint are pruned (nothing can roll back there); a repeat of a pruned one is refused.

The API other request/reply pairs use (e.g. a release-once strategy): :meth:`PrivacyJournal.answered`
(has this id been answered, with which request digest), :meth:`PrivacyJournal.cached_reply`,
:meth:`PrivacyJournal.record` (append a line: what was spent, plus ``extra`` fields) and
:meth:`PrivacyJournal.keep_reply` (``pinned=True``: never pruned, e.g. a one-shot release that every
later run of the same dataset should get again). :meth:`PartyPrivacy.answer
<distgan.privacy.mechanisms.PartyPrivacy.answer>` strings them together for every request.

A new request type whose reply draws on private data declares ``request_id: str = ""`` and joins
:data:`distgan.protocol.IDENTIFIED_REQUESTS`. :class:`~distgan.runtime.base.Parties` stamps
``SESSION/ROUND.INDEX`` on it unless the request already carries an id: a request built with a
fixed id of another form (e.g. ``"dp-merf/<digest of its public parameters>"``) is answered once
per dataset -- every later run on the same data gets the same reply, at no cost -- because replies
to ids not of the ``SESSION/ROUND.INDEX`` form are never pruned.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distgan import protocol as p
from distgan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger("distgan")

LEDGER_FILE = "privacy-ledger.jsonl"
REPLIES_FOLDER = "privacy-replies"
CUT_MARK = "cut-line-above"
"""The kind of the line an append writes after a line a crash cut short (which is then skipped)."""

History = list[tuple[float, float, int]]
"""Opacus's RDP history: (noise multiplier, sample rate, steps) per run of identical steps."""


def request_digest(request: p.Message) -> str:
    """A fingerprint of a request's content (its id left out): a repeat must repeat the content too."""
    kind, tensors, scalars = p.encode(request)
    digest = hashlib.blake2b(kind.encode(), digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    digest.update(json.dumps({k: v for k, v in scalars.items() if k != "request_id"}, sort_keys=True).encode())
    return digest.hexdigest()


def parse_request_id(request_id: str) -> tuple[str, int, int] | None:
    """``SESSION/ROUND.INDEX`` -> (session, round, index); None for ids of another form."""
    session, _, position = request_id.rpartition("/")
    round_text, _, index_text = position.partition(".")
    if not round_text.isdigit() or not index_text.isdigit():
        return None
    return session, int(round_text), int(index_text)


@dataclass(frozen=True)
class JournalEntry:
    request: str
    kind: str
    digest: str
    spent: History
    extra: dict[str, Any] = field(default_factory=dict)


class PrivacyJournal:
    """The ledger file and reply cache of one party's dataset; ``folder=None`` keeps them in memory
    (a party built without storage, as in unit tests: still append-only, but lost with the process)."""

    def __init__(self, folder: Path | None, owner: str = "party") -> None:
        self.folder = folder
        self.owner = owner
        self.entries: list[JournalEntry] = []
        self._by_request: dict[str, JournalEntry] = {}
        self._memory_replies: dict[str, p.Message] = {}
        self._torn_tail = False
        if folder is not None and (folder / LEDGER_FILE).is_file():
            self._read(folder / LEDGER_FILE)

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / LEDGER_FILE

    def _read(self, path: Path) -> None:
        text = path.read_text()
        lines = text.split("\n")
        if lines and lines[-1]:  # no newline after the last line: its write was cut, its reply never left
            log.warning("%s: %s ends in an incomplete line (a write cut short); it is ignored", self.owner, path)
            self._torn_tail = True
        complete = lines[:-1]
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            if number < len(complete) and CUT_MARK in complete[number]:
                continue  # a line cut by a crash, closed by the next append: its reply never left
            try:
                raw = json.loads(line)
                spent = [(float(sigma), float(rate), int(steps)) for sigma, rate, steps in raw["spent"]]
                entry = JournalEntry(str(raw["request"]), str(raw["kind"]), str(raw["digest"]), spent,
                                     {k: v for k, v in raw.items() if k not in ("request", "kind", "digest", "spent")})
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}: line {number} is not a privacy ledger entry ({error})") from None
            if any(not (math.isfinite(sigma) and sigma > 0 and 0 < rate <= 1 and steps >= 0)
                   for sigma, rate, steps in spent):
                raise ValueError(f"{path}: line {number}: spent={raw['spent']!r} is not a valid mechanism history")
            self._add(entry)

    def _add(self, entry: JournalEntry) -> None:
        self.entries.append(entry)
        if entry.request:
            self._by_request[entry.request] = entry

    # -- the ledger ----------------------------------------------------------------------------------
    @property
    def history(self) -> History:
        """Every mechanism invocation ever recorded, in order (consecutive equal ones merged)."""
        merged: History = []
        for entry in self.entries:
            for sigma, rate, steps in entry.spent:
                if steps == 0:
                    continue
                if merged and merged[-1][:2] == (sigma, rate):
                    merged[-1] = (sigma, rate, merged[-1][2] + steps)
                else:
                    merged.append((sigma, rate, steps))
        return merged

    def answered(self, request_id: str) -> JournalEntry | None:
        """The entry of an identified request already answered (None: never answered)."""
        return self._by_request.get(request_id) if request_id else None

    def record(self, request_id: str, kind: str, digest: str, spent: History, **extra: Any) -> JournalEntry:
        """Append one line (durably, before the caller lets its reply go) and return it."""
        entry = JournalEntry(request_id, kind, digest, [tuple(step) for step in spent], extra)  # type: ignore[misc]
        if self.folder is not None:
            line = json.dumps({"request": request_id, "kind": kind, "digest": digest,
                               "spent": [list(step) for step in spent],
                               "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               **extra}, sort_keys=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            prefix = "\n" + json.dumps({"request": "", "kind": CUT_MARK, "digest": "", "spent": []}) + "\n" \
                if self._torn_tail else ""
            descriptor = os.open(self.folder / LEDGER_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, (prefix + line + "\n").encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            self._torn_tail = False
        self._add(entry)
        return entry

    # -- the replies -----------------------------------------------------------------------------------
    def _stem(self, request_id: str) -> Path:
        assert self.folder is not None
        parsed = parse_request_id(request_id)
        name = hashlib.sha256(request_id.encode()).hexdigest()[:24]
        if parsed is not None:
            session, round_number, index = parsed
            name = f"{hashlib.sha256(session.encode()).hexdigest()[:12]}-r{round_number:09d}-{index:05d}"
        return self.folder / REPLIES_FOLDER / name

    def keep_reply(self, request_id: str, reply: p.Message, pinned: bool = False) -> None:
        """Keep the reply released to ``request_id`` (``pinned``: never pruned)."""
        if self.folder is None:
            self._memory_replies[request_id] = reply
            return
        kind, tensors, scalars = p.encode(reply)
        save_checkpoint(self._stem(request_id), tensors,
                        {"request": request_id, "kind": kind, "scalars": scalars, "pinned": pinned})

    def cached_reply(self, request_id: str) -> p.Message | None:
        """The reply released to ``request_id`` if it is still kept."""
        if self.folder is None:
            return self._memory_replies.get(request_id)
        stem = self._stem(request_id)
        if not stem.with_suffix(".json").is_file():
            return None
        try:
            tensors, meta = load_checkpoint(stem)
        except CheckpointError as error:
            log.warning("%s: kept reply to %s unreadable (%s)", self.owner, request_id, error)
            return None
        if meta.get("request") != request_id:
            return None
        return p.decode(str(meta["kind"]), tensors, meta["scalars"])

    def prune_replies(self, session: str, before_round: int) -> None:
        """Forget the unpinned replies of ``session`` to rounds up to ``before_round`` (no checkpoint
        older than that is kept, so no load can take the party back there) and those of other sessions."""
        if self.folder is None:
            for request_id in list(self._memory_replies):
                parsed = parse_request_id(request_id)
                if parsed is not None and (parsed[0] != session or parsed[1] <= before_round):
                    del self._memory_replies[request_id]
            return
        session_tag = hashlib.sha256(session.encode()).hexdigest()[:12]
        for meta_path in (self.folder / REPLIES_FOLDER).glob("*-r*-*.json"):
            tag, round_text = meta_path.stem.split("-")[:2]
            if tag != session_tag or int(round_text[1:]) <= before_round:
                try:
                    if json.loads(meta_path.read_text()).get("meta", {}).get("pinned"):
                        continue
                except (OSError, ValueError):
                    pass
                meta_path.unlink(missing_ok=True)
                meta_path.with_suffix(".safetensors").unlink(missing_ok=True)

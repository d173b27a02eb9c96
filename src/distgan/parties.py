"""The ``Parties`` handle: how strategies reach parties without knowing where they run. The core
interface every strategy programs against, beside the protocol; runtimes (``runtime/``) implement it.

A strategy hands a mapping ``party -> request`` to :meth:`Parties.request` and gets the replies of
the parties that answered well. Every reply is validated here, on receipt, and its bytes counted;
a party that raises, dies, or sends a malformed reply is marked failed with a message naming it,
and the round goes on with the others (``runtime.on_party_failure = "continue"``) or the run stops.
A reply must also fit its request (:func:`check_reply`): the reply type the request asks for,
feedback for exactly the images sent, deltas and weights that fit the run's models. With
``"wait"`` a runtime that can restart a lost party (a worker process that died) restarts it,
reloads its last saved state and sends the request again.
"""

from __future__ import annotations

import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from distgan import protocol as p

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("distgan")


class PartyFailedError(RuntimeError):
    """A party failed and the run is configured to stop on failure (or none is left)."""


class PartyLostError(PartyFailedError):
    """The party's process or connection is gone (it did not answer badly: it did not answer)."""


@dataclass(frozen=True)
class ModelReference:
    """Names, shapes and dtypes of the run's G and D, against which weight-carrying replies are checked."""

    generator: dict[str, tuple[tuple[int, ...], torch.dtype]]
    discriminator: dict[str, tuple[tuple[int, ...], torch.dtype]]
    discriminator_size: int
    """Entries of D's flat parameter vector (what server-d deltas index)."""
    generator_parameters: tuple[tuple[int, ...], ...] = ()
    """Shapes of G's parameters in order (what the Adam state of a travelling G is indexed by)."""

    @classmethod
    def of(cls, generator: nn.Module, discriminator: nn.Module) -> ModelReference:
        def entries(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
            return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}

        return cls(entries(generator), entries(discriminator),
                   sum(parameter.numel() for parameter in discriminator.parameters()),
                   tuple(tuple(parameter.shape) for parameter in generator.parameters()))

    def nbytes(self) -> int:
        return sum(torch.Size(shape).numel() * dtype.itemsize
                   for entries in (self.generator, self.discriminator) for shape, dtype in entries.values())

    def reply_byte_limit(self, expect: p.Expectations) -> int:
        """Twice the largest legitimate reply (both models' weights, or G with its two Adam moments, plus a
        full feedback), plus 1 MiB: a reply above it is refused before anything looks inside."""
        feedback = expect.max_steps * expect.batch_size * (torch.Size(expect.image_shape).numel() + 1) * 4
        generator_with_adam = 3 * 4 * sum(torch.Size(shape).numel() for shape in self.generator_parameters)
        return min(expect.max_bytes, 2 * (max(self.nbytes(), generator_with_adam) + feedback) + (1 << 20))


def check_reply(sender: str, request: p.Message, reply: p.Message, models: ModelReference | None) -> None:
    """What :meth:`Message.validate` cannot see alone: the reply fits this request and these models."""
    allowed = p.reply_types(type(request))  # what the request class states it may get
    if not isinstance(reply, allowed):
        raise p.ProtocolError(f"{sender}: replied {reply.kind} to {request.kind}, expected "
                              + " or ".join(kind.kind for kind in allowed))
    if isinstance(request, (p.TrainDiscriminator, p.QueryFeedback)):
        wants_feedback = getattr(request, "feedback", True)
        if wants_feedback and not isinstance(reply, p.Feedback):
            raise p.ProtocolError(f"{sender}: replied {reply.kind} to {request.kind}, which asks for feedback")
        if isinstance(reply, p.Feedback) and reply.input_gradients.shape != request.fakes.shape:
            raise p.ProtocolError(f"{sender}: {reply.kind}.input_gradients has shape "
                                  f"{tuple(reply.input_gradients.shape)}, but {tuple(request.fakes.shape)} "
                                  "images were sent")
    if isinstance(request, p.ReleaseEmbedding) and isinstance(reply, p.EmbeddingRelease) \
            and not reply.answers(request):
        raise p.ProtocolError(f"{sender}: {reply.kind} is not the embedding {request.kind} asked for "
                              f"({reply.features} features, lengthscale {reply.lengthscale} "
                              f"[{reply.extra_lengthscales}], seed "
                              f"{reply.feature_seed}, {reply.embedding.shape[1]} labels)")
    if models is None:
        return
    if isinstance(reply, p.DeltaUpload) and len(reply.indices):
        if int(reply.indices.min()) < 0 or int(reply.indices.max()) >= models.discriminator_size:
            raise p.ProtocolError(f"{sender}: {reply.kind}.indices outside [0, {models.discriminator_size}) "
                                  "of the D parameters")
        if len(reply.indices.unique()) != len(reply.indices):
            raise p.ProtocolError(f"{sender}: {reply.kind}.indices repeat an entry")
    if isinstance(reply, (p.WeightsReply, p.GeneratorReply)):
        for name, reference in (("generator", models.generator), ("discriminator", models.discriminator)):
            weights = getattr(reply, name, None)
            if not weights:
                continue
            if set(weights) != set(reference):
                raise p.ProtocolError(f"{sender}: {reply.kind}.{name} has entries "
                                      f"{sorted(set(weights) ^ set(reference))} the model does not (or lacks them)")
            for key, tensor in weights.items():
                shape, dtype = reference[key]
                if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                    raise p.ProtocolError(f"{sender}: {reply.kind}.{name}/{key} is {tensor.dtype} "
                                          f"{tuple(tensor.shape)}, the model's is {dtype} {shape}")
    if isinstance(reply, p.GeneratorReply):
        check_adam_state(sender, reply.kind, reply.optimizer, models.generator_parameters)


def check_adam_state(sender: str, kind: str, state: p.Weights, parameters: tuple[tuple[int, ...], ...]) -> None:
    """Adam state of G: moments shaped like the parameter they belong to, a scalar step count."""
    for key, tensor in state.items():
        index, _, name = key.partition("/")
        if not index.isdigit() or int(index) >= len(parameters):
            raise p.ProtocolError(f"{sender}: {kind}.optimizer/{key} names no parameter of G "
                                  f"(it has {len(parameters)})")
        want = () if name == "step" else parameters[int(index)]
        if tuple(tensor.shape) != want or tensor.dtype != torch.float32:
            raise p.ProtocolError(f"{sender}: {kind}.optimizer/{key} is {tensor.dtype} {tuple(tensor.shape)}, "
                                  f"expected float32 {want}")


@dataclass
class Traffic:
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)

    def add(self, party: int, down: int, up: int) -> None:
        self.bytes_down[party] = self.bytes_down.get(party, 0) + down
        self.bytes_up[party] = self.bytes_up.get(party, 0) + up


DESCRIBE_ONLY = p.Expectations(image_shape=(1, 1, 1), batch_size=1, max_steps=1)
"""Expectations before :meth:`Parties.configure`: a ``Description`` fits them, a training reply does not."""


class Parties(ABC):
    """All parties of a run, wherever they live."""

    def __init__(self, count: int, expectations: p.Expectations | None = None, stop_on_failure: bool = False) -> None:
        self.count = count
        self.expectations = expectations or DESCRIBE_ONLY
        """What replies are checked against: set by :meth:`configure` once the parties have described
        themselves (until then only ``Describe`` is meaningful)."""
        self.stop_on_failure = stop_on_failure
        self.failed: dict[int, str] = {}
        self.traffic = Traffic()
        self.observers: list[object] = []  # callables (party, request, reply) for audits and tests
        self.models: ModelReference | None = None
        """Set by the coordinator once the models are known; replies carrying weights are checked against it."""
        self.restart_lost = False
        """``runtime.on_party_failure = "wait"``: restart a lost party (where the runtime can) and retry."""
        self.saved_rounds: dict[int, int] = {}
        """The round of each party's last state saved or loaded: what a restarted party reloads."""
        self.request_session = ""
        """Names the run in request ids (set by the coordinator; stable across resumes of one run)."""
        self._request_round = 0
        self._sequence: dict[int, int] = {}

    def begin_round(self, round_number: int) -> None:
        """Requests from now on belong to ``round_number`` (the coordinator calls this before each round)."""
        self._request_round = round_number
        self._sequence.clear()

    def _identify(self, party: int, request: p.Message) -> p.Message:
        """Stamp ``SESSION/ROUND.INDEX`` on a request of :data:`~distgan.protocol.IDENTIFIED_REQUESTS`:
        the same logical request gets the same id when a resumed run or a retry repeats it, so a
        private party answers it from its journal instead of drawing new noise."""
        if not isinstance(request, p.IDENTIFIED_REQUESTS) or request.request_id:  # type: ignore[attr-defined]
            return request
        index = self._sequence.get(party, 0)
        self._sequence[party] = index + 1
        return dataclasses.replace(request,  # type: ignore[type-var]
                                   request_id=f"{self.request_session}/{self._request_round}.{index}")

    def configure(self, expectations: p.Expectations, models: ModelReference) -> None:
        """After the parties' ``Describe``: the image shape, batch and steps replies must fit, and the
        run's models (weights in replies are checked against them, and sizes bounded by them)."""
        self.models = models
        self.expectations = dataclasses.replace(expectations, max_bytes=models.reply_byte_limit(expectations))

    @property
    def active(self) -> list[int]:
        return [j for j in range(self.count) if j not in self.failed]

    def request(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message]:
        """Send each party its request (in parallel where the runtime can); return valid replies."""
        wanted = {j: self._identify(j, r) for j, r in requests.items() if j not in self.failed}
        outcomes = self._dispatch(wanted)
        lost = [j for j in wanted if isinstance(outcomes.get(j), PartyLostError)]
        if lost and self.restart_lost:
            restarted = self._restart(lost)
            if restarted:
                outcomes.update(self._dispatch({j: wanted[j] for j in restarted}))
        replies: dict[int, p.Message] = {}
        for party, request in wanted.items():
            outcome = outcomes.get(party, PartyFailedError("no reply"))
            if isinstance(outcome, BaseException):
                self._fail(party, f"{type(outcome).__name__}: {outcome}")
                continue
            try:
                outcome.validate(f"party {party}", self.expectations)
                check_reply(f"party {party}", request, outcome, self.models)
            except p.ProtocolError as error:
                self._fail(party, f"malformed reply rejected: {error}")
                continue
            if isinstance(request, (p.SaveState, p.LoadState)):
                self.saved_rounds[party] = request.round
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

    def _restart(self, parties: list[int]) -> list[int]:
        """Restart lost parties and reload their last saved state; returns those ready again.
        Runtimes that cannot restart a party keep this default: none."""
        return []

    @abstractmethod
    def _dispatch(self, requests: Mapping[int, p.Message]) -> dict[int, p.Message | BaseException]:
        """Deliver requests; return each party's reply or the exception it raised."""

    def close(self) -> None:
        """Release processes or connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Every message between the coordinator and a party: typed, sized, validated on receipt.

The trust boundary of distgan is here. Requests go down (generated images, weights the platform
already holds, numbers); replies come up (statistics, discriminator scores and gradients with
respect to *generated* images, selected weight deltas, weights). No field of any message has the
type or the place to carry a real sample: ``tests/test_protocol.py`` checks every message of a run.

Each message is a frozen dataclass whose fields are tensors, tensor dicts (weights) or scalars.
``encode`` / ``decode`` turn one into (tensors, scalars) for any transport (pipes, Flower records)
and ``validate`` checks it against what the receiver expects, raising :class:`ProtocolError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from distgan.config import NotPositiveNumber, positive_numbers

MAX_MESSAGE_BYTES = 1 << 30
"""Refuse any message over 1 GiB: no legitimate message of a supported model comes close."""
MAX_RANDOM_FEATURES = 1 << 17
"""dp-merf: at most this many random features (an embedding of 1,000 labels is then 0.5 GiB)."""
MAX_LABELS = 1000

Scalar = int | float | str | bool
Weights = dict[str, torch.Tensor]


class ProtocolError(ValueError):
    """A message that fails validation; the text names the sender and the problem."""


@dataclass(frozen=True)
class Expectations:
    """What a receiver knows, against which a message is checked."""

    image_shape: tuple[int, int, int]
    batch_size: int
    max_steps: int
    max_bytes: int = MAX_MESSAGE_BYTES


REVEALS = ("public", "stats", "feedback", "weights", "embedding")
"""What a reply can reveal of a party's data, for its privacy filter (privacy.mechanisms.release):
public metadata or nothing; D's loss statistics; D's scores and gradients on generated images; weights;
a statistic of the data itself, released once (dp-merf's embedding)."""


class Message:
    """Base of every message: encoding, size and validation shared by all.

    Every message class states its facts in its own body, and a class that lacks one fails when it
    is defined (not later, somewhere else):

    * a request (``direction = "down"``): ``replies``, the reply kinds it may get (anything else is a
      protocol violation of the party), and ``runs_discriminator``, whether handling it runs the
      party's D (D's dropout then draws from the party's seeded stream);
    * a reply (``direction = "up"``): ``reveals``, one of :data:`REVEALS` (what the party's privacy
      filter does with it).
    """

    kind: ClassVar[str]
    direction: ClassVar[str]  # "down" (to a party) or "up" (to the coordinator)
    replies: ClassVar[tuple[str, ...]]
    runs_discriminator: ClassVar[bool]
    reveals: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        facts = {"down": ("replies", "runs_discriminator"), "up": ("reveals",)}.get(own.get("direction", ""))
        if "kind" not in own or facts is None:
            raise TypeError(f"message class {cls.__qualname__} must state kind and direction ('down' or 'up')")
        missing = [name for name in facts if name not in own]
        if missing:
            raise TypeError(f"message class {cls.__qualname__} ({own['direction']}) must state "
                            f"{' and '.join(missing)} in its body; see distgan.protocol.Message")
        if own["direction"] == "up" and own["reveals"] not in REVEALS:
            raise TypeError(f"{cls.__qualname__}.reveals={own['reveals']!r}: must be one of {', '.join(REVEALS)}")

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                out[f.name] = value
            elif isinstance(value, dict):
                out.update({f"{f.name}/{key}": tensor for key, tensor in value.items()})
        return out

    def scalars(self) -> dict[str, Scalar]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if isinstance(getattr(self, f.name), (int, float, str, bool))}

    def nbytes(self) -> int:
        """Bytes on the wire: tensor payloads plus 8 per scalar. Computed once per message (it is frozen;
        validation and the traffic count both ask)."""
        size = self.__dict__.get("_nbytes")
        if size is None:
            size = sum(t.numel() * t.element_size() for t in self.tensors().values()) + 8 * len(self.scalars())
            object.__setattr__(self, "_nbytes", size)
        return size

    def validate(self, sender: str, expect: Expectations) -> None:
        size = self.nbytes()
        if size > expect.max_bytes:
            raise ProtocolError(f"{sender}: {self.kind} of {size} bytes exceeds the limit of {expect.max_bytes}")
        for name, tensor in self.tensors().items():
            if tensor.dtype.is_floating_point:
                if tensor.dtype != torch.float32:
                    raise ProtocolError(f"{sender}: {self.kind}.{name} has dtype {tensor.dtype}, expected float32")
                if not all_finite(tensor):
                    raise ProtocolError(f"{sender}: {self.kind}.{name} holds NaN or Inf")
        for name, value in self.scalars().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ProtocolError(f"{sender}: {self.kind}.{name} = {value} is not finite")
        self.check(sender, expect)

    def check(self, sender: str, expect: Expectations) -> None:
        """Message-specific shape checks."""


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(tensors)`` as float32 on the CPU, the form messages carry; a single tensor already
    so becomes a view (the usual one-step, one-party message: no copy of the batch)."""
    joined = tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
    return joined.float().cpu()


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or Inf in ``tensor``. A NaN or an Inf makes the sum NaN or Inf, so a finite sum proves the
    tensor finite in one reduction; only a non-finite sum (or an overflow of a finite tensor's sum) pays
    for the element-wise check. ``isfinite(t).all()`` alone cost ~40x the sum: most of a message's
    validation, on every message of every step."""
    return math.isfinite(float(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _shape(sender: str, kind: str, name: str, tensor: torch.Tensor | None, shape: tuple[int | None, ...],
           dtype: torch.dtype = torch.float32) -> None:
    if tensor is None:
        return
    if tensor.dtype != dtype:
        raise ProtocolError(f"{sender}: {kind}.{name} has dtype {tensor.dtype}, expected {dtype}")
    if tensor.dim() != len(shape) or any(want is not None and got != want
                                         for got, want in zip(tensor.shape, shape)):
        wanted = "x".join("*" if s is None else str(s) for s in shape)
        raise ProtocolError(f"{sender}: {kind}.{name} has shape {tuple(tensor.shape)}, expected {wanted}")


def _steps_batches(sender: str, kind: str, name: str, tensor: torch.Tensor | None, expect: Expectations) -> None:
    _shape(sender, kind, name, tensor, (None, None, *expect.image_shape))
    if tensor is not None and not (1 <= tensor.shape[0] <= expect.max_steps
                                   and 1 <= tensor.shape[1] <= expect.batch_size):
        raise ProtocolError(f"{sender}: {kind}.{name} carries {tensor.shape[0]} steps of {tensor.shape[1]}, "
                            f"at most {expect.max_steps} of {expect.batch_size} expected")


# -- requests (coordinator -> party) --------------------------------------------------------------
@dataclass(frozen=True)
class TrainDiscriminator(Message):
    """Train D_j for ``len(fakes)`` steps on real batches vs these generated batches; then, if
    ``feedback``, score the same generated batches with the trained D_j and return dl/dx for each
    (with one step this is exactly the alternating update of the usual GAN loop)."""

    kind: ClassVar[str] = "train.discriminator"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.feedback", "reply.stats")
    runs_discriminator: ClassVar[bool] = True
    fakes: torch.Tensor  # [S, B, C, H, W] generated images
    feedback: bool = False
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        _steps_batches(sender, self.kind, "fakes", self.fakes, expect)


@dataclass(frozen=True)
class QueryFeedback(Message):
    """Score generated images with D_j (no training) and return dl/dx for each."""

    kind: ClassVar[str] = "query.feedback"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.feedback",)
    runs_discriminator: ClassVar[bool] = True
    fakes: torch.Tensor  # [S, B, C, H, W] generated images
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        _steps_batches(sender, self.kind, "fakes", self.fakes, expect)


@dataclass(frozen=True)
class TrainAndUpload(Message):
    """server-d (Alg. 1): optionally overwrite some D_j weights with the server's, train D_j, then
    upload a fraction of the weight deltas (``largest`` magnitude or ``random``)."""

    kind: ClassVar[str] = "train.upload"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.deltas",)
    runs_discriminator: ClassVar[bool] = True
    fakes: torch.Tensor  # [S, B, C, H, W] generated images
    upload_fraction: float
    selection: str
    download_indices: torch.Tensor | None = None  # int64 [k] into the flat D parameter vector
    download_values: torch.Tensor | None = None  # float32 [k] server-D weights
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        _steps_batches(sender, self.kind, "fakes", self.fakes, expect)
        _check_upload_terms(sender, self)


def _check_upload_terms(sender: str, request: TrainAndUpload | GenerateAndUpload) -> None:
    """The server-d terms both upload requests share: fractions, selection rule, the download."""
    kind = request.kind
    if not 0 < request.upload_fraction <= 1 or request.selection not in ("largest", "random"):
        raise ProtocolError(f"{sender}: {kind} upload_fraction={request.upload_fraction} "
                            f"selection={request.selection!r} out of range")
    if (request.download_indices is None) != (request.download_values is None):
        raise ProtocolError(f"{sender}: {kind} download indices and values must come together")
    _shape(sender, kind, "download_indices", request.download_indices, (None,), torch.int64)
    _shape(sender, kind, "download_values", request.download_values, (None,))
    if request.download_indices is not None and request.download_values is not None and \
            request.download_indices.shape != request.download_values.shape:
        raise ProtocolError(f"{sender}: {kind} download indices and values differ in length")


@dataclass(frozen=True)
class GenerateAndUpload(Message):
    """server-d with G's weights (``strategy.fakes=party``): load G, generate ``steps`` batches of
    fakes here, then as :class:`TrainAndUpload`. The message's size depends on G, not on the steps."""

    kind: ClassVar[str] = "train.generate_upload"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.deltas",)
    runs_discriminator: ClassVar[bool] = True
    steps: int
    upload_fraction: float
    selection: str
    generator: Weights = field(default_factory=dict)
    download_indices: torch.Tensor | None = None  # int64 [k] into the flat D parameter vector
    download_values: torch.Tensor | None = None  # float32 [k] server-D weights
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        if not 1 <= self.steps <= expect.max_steps:
            raise ProtocolError(f"{sender}: {self.kind}.steps={self.steps} outside [1, {expect.max_steps}]")
        if not self.generator:
            raise ProtocolError(f"{sender}: {self.kind} carries no generator weights")
        _check_upload_terms(sender, self)


@dataclass(frozen=True)
class TrainGeneratorEpoch(Message):
    """round-robin per epoch (``strategy.switch=epoch``, the paper's Alg. 3): load G and its Adam
    state, train D_j and G for one pass over the party's data (``ceil(n_j / batch)`` steps, each a
    D step then a G step against D_j), and send G and its Adam state back. ``optimizer`` is empty
    before G's first step."""

    kind: ClassVar[str] = "train.generator_epoch"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.generator",)
    runs_discriminator: ClassVar[bool] = True
    generator: Weights = field(default_factory=dict)
    optimizer: Weights = field(default_factory=dict)  # Adam state: "<parameter index>/<exp_avg|exp_avg_sq|step>"
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        if not self.generator:
            raise ProtocolError(f"{sender}: {self.kind} carries no generator weights")
        _check_optimizer_keys(sender, self.kind, self.optimizer)


def _check_optimizer_keys(sender: str, kind: str, optimizer: Weights) -> None:
    for key in optimizer:
        index, _, name = key.partition("/")
        if not index.isdigit() or name not in ("exp_avg", "exp_avg_sq", "step"):
            raise ProtocolError(f"{sender}: {kind}.optimizer has entry {key!r}; expected "
                                "'<parameter index>/exp_avg', '/exp_avg_sq' or '/step'")


@dataclass(frozen=True)
class TrainLocalGAN(Message):
    """fedgan / local-only: load the given weights (when set), train the party's own G and D
    for ``steps`` steps, return the weights asked for."""

    kind: ClassVar[str] = "train.local_gan"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.weights",)
    runs_discriminator: ClassVar[bool] = True
    steps: int
    generator: Weights | None = None
    discriminator: Weights | None = None
    return_generator: bool = True
    return_discriminator: bool = True
    request_id: str = ""
    """Stamped by :meth:`Parties.request <distgan.runtime.base.Parties.request>`: what a private party
    keys its journal of answered requests on (a repeat gets the first reply, never new noise)."""

    def check(self, sender: str, expect: Expectations) -> None:
        if not 1 <= self.steps <= expect.max_steps:
            raise ProtocolError(f"{sender}: {self.kind}.steps={self.steps} outside [1, {expect.max_steps}]")


@dataclass(frozen=True)
class ExportDiscriminator(Message):
    """md-gan: send D_j's weights (for the discriminator swap)."""

    kind: ClassVar[str] = "query.export_discriminator"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.weights",)
    runs_discriminator: ClassVar[bool] = False


@dataclass(frozen=True)
class ImportDiscriminator(Message):
    """md-gan: replace D_j's weights with these (another party's D, from the swap)."""

    kind: ClassVar[str] = "train.import_discriminator"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.ack",)
    runs_discriminator: ClassVar[bool] = False
    discriminator: Weights = field(default_factory=dict)


@dataclass(frozen=True)
class SaveState(Message):
    """Checkpoint the party's own state (D, optimizer, RNG) in its own storage, tagged by round."""

    kind: ClassVar[str] = "train.save_state"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.ack",)
    runs_discriminator: ClassVar[bool] = False
    round: int


@dataclass(frozen=True)
class LoadState(Message):
    """Restore the party's state as saved at ``round``."""

    kind: ClassVar[str] = "train.load_state"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.ack",)
    runs_discriminator: ClassVar[bool] = False
    round: int


@dataclass(frozen=True)
class Describe(Message):
    """Ask for the party's public statistics: sample count and label histogram."""

    kind: ClassVar[str] = "query.describe"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.description",)
    runs_discriminator: ClassVar[bool] = False


@dataclass(frozen=True)
class ReleaseEmbedding(Message):
    """dp-merf: release, once, the sum over the party's records of ``[a phi(x), b] (x) onehot(y)`` for the
    random Fourier features these public numbers define (:mod:`distgan.privacy.random_features`).
    A party under DP adds Gaussian noise once and answers every repeat of the same request with the
    same reply, spending nothing more."""

    kind: ClassVar[str] = "query.release_embedding"
    direction: ClassVar[str] = "down"
    replies: ClassVar[tuple[str, ...]] = ("reply.embedding",)
    runs_discriminator: ClassVar[bool] = False
    feature_seed: int
    features: int
    lengthscale: float
    num_labels: int
    extra_lengthscales: str = ""
    """Further kernels' lengthscales, comma-separated (:func:`format_lengthscales`); empty: one kernel."""

    def check(self, sender: str, expect: Expectations) -> None:
        if not (2 <= self.features <= MAX_RANDOM_FEATURES and self.features % 2 == 0):
            raise ProtocolError(f"{sender}: {self.kind}.features={self.features} must be even, in [2, "
                                f"{MAX_RANDOM_FEATURES}]")
        if not 1 <= self.num_labels <= MAX_LABELS:
            raise ProtocolError(f"{sender}: {self.kind}.num_labels={self.num_labels} outside [1, {MAX_LABELS}]")
        if not self.lengthscale > 0 or self.feature_seed < 0:
            raise ProtocolError(f"{sender}: {self.kind} lengthscale={self.lengthscale} and "
                                f"feature_seed={self.feature_seed} must be positive")
        extra = parse_lengthscales(self.extra_lengthscales, f"{sender}: {self.kind}")
        if len(extra) + 1 > self.features // 2:
            raise ProtocolError(f"{sender}: {self.kind} asks for {len(extra) + 1} kernels but has only "
                                f"{self.features // 2} frequencies")


def format_lengthscales(lengthscales: tuple[float, ...]) -> str:
    """The wire form of further lengthscales: their exact reprs, comma-separated (the scalars a transport
    carries are numbers and strings, not lists)."""
    return ",".join(repr(float(value)) for value in lengthscales)


def parse_lengthscales(text: str, where: str = "extra_lengthscales") -> tuple[float, ...]:
    """The inverse of :func:`format_lengthscales`; a malformed, non-positive or non-finite entry is a
    protocol error naming the value."""
    try:
        return positive_numbers(text.split(",") if text else [])
    except NotPositiveNumber as bad:
        raise ProtocolError(f"{where}: extra_lengthscales={text!r}: {bad.entry!r} is not a positive finite "
                            "number") from None


# -- replies (party -> coordinator) ---------------------------------------------------------------
@dataclass(frozen=True)
class DiscriminatorStats(Message):
    """Means over the steps of one request. ``epsilon``: privacy spent so far (0 without DP)."""

    kind: ClassVar[str] = "reply.stats"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "stats"
    d_loss: float = 0.0
    d_real: float = 0.0  # mean D(x) on real samples, a probability
    d_fake: float = 0.0  # mean D(G(z)), a probability
    steps: int = 0
    epsilon: float = 0.0


@dataclass(frozen=True)
class Feedback(Message):
    """D_j's logits on generated images and their gradient with respect to those images."""

    kind: ClassVar[str] = "reply.feedback"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "feedback"
    stats: DiscriminatorStats
    logits: torch.Tensor  # [S', B]
    input_gradients: torch.Tensor  # [S', B, C, H, W]

    def check(self, sender: str, expect: Expectations) -> None:
        _shape(sender, self.kind, "logits", self.logits, (None, None))
        _steps_batches(sender, self.kind, "input_gradients", self.input_gradients, expect)
        if self.logits.shape != self.input_gradients.shape[:2]:
            raise ProtocolError(f"{sender}: {self.kind} logits {tuple(self.logits.shape)} do not match "
                                f"gradients {tuple(self.input_gradients.shape)}")

    def scalars(self) -> dict[str, Scalar]:
        return {f"stats/{k}": v for k, v in self.stats.scalars().items()}


@dataclass(frozen=True)
class DeltaUpload(Message):
    """server-d: the selected entries of D_j's weight change over this request."""

    kind: ClassVar[str] = "reply.deltas"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "weights"
    stats: DiscriminatorStats
    indices: torch.Tensor  # int64 [k] into the flat D parameter vector
    values: torch.Tensor  # float32 [k]

    def check(self, sender: str, expect: Expectations) -> None:
        _shape(sender, self.kind, "indices", self.indices, (None,), torch.int64)
        _shape(sender, self.kind, "values", self.values, (len(self.indices),))

    def scalars(self) -> dict[str, Scalar]:
        return {f"stats/{k}": v for k, v in self.stats.scalars().items()}


@dataclass(frozen=True)
class WeightsReply(Message):
    """Weights of a party's networks (fedgan, local-only, md-gan swap). ``g_loss`` when G trained."""

    kind: ClassVar[str] = "reply.weights"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "weights"
    stats: DiscriminatorStats
    generator: Weights | None = None
    discriminator: Weights | None = None
    g_loss: float = 0.0

    def scalars(self) -> dict[str, Scalar]:
        return {"g_loss": self.g_loss, **{f"stats/{k}": v for k, v in self.stats.scalars().items()}}


@dataclass(frozen=True)
class GeneratorReply(Message):
    """The generator after a party's epoch (:class:`TrainGeneratorEpoch`): G's weights, its Adam
    state, the mean G loss and the number of G steps taken."""

    kind: ClassVar[str] = "reply.generator"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "weights"
    stats: DiscriminatorStats
    generator: Weights = field(default_factory=dict)
    optimizer: Weights = field(default_factory=dict)
    g_loss: float = 0.0
    g_steps: int = 0

    def check(self, sender: str, expect: Expectations) -> None:
        if not self.generator or self.g_steps < 1:
            raise ProtocolError(f"{sender}: {self.kind} carries no generator or no G step (g_steps={self.g_steps})")
        _check_optimizer_keys(sender, self.kind, self.optimizer)

    def scalars(self) -> dict[str, Scalar]:
        return {"g_loss": self.g_loss, "g_steps": self.g_steps,
                **{f"stats/{k}": v for k, v in self.stats.scalars().items()}}


@dataclass(frozen=True)
class Description(Message):
    """Public statistics of a party: sample count, label histogram (counts, never samples) and the
    image shape its data comes in, so a coordinator without data (a Flower ServerApp) can build G."""

    kind: ClassVar[str] = "reply.description"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "public"
    samples: int
    label_counts: torch.Tensor  # int64 [num_labels]; empty for unlabelled data
    image_shape: torch.Tensor | None = None  # int64 [3]: channels, height, width

    def check(self, sender: str, expect: Expectations) -> None:
        _shape(sender, self.kind, "label_counts", self.label_counts, (None,), torch.int64)
        _shape(sender, self.kind, "image_shape", self.image_shape, (3,), torch.int64)
        if self.image_shape is not None and not bool((self.image_shape > 0).all()):
            raise ProtocolError(f"{sender}: {self.kind}.image_shape {self.image_shape.tolist()} must be positive")


@dataclass(frozen=True)
class EmbeddingRelease(Message):
    """dp-merf: a party's summed label embedding ``[features + 1, num_labels]`` (under DP with its
    Gaussian noise), for the request it answers; ``epsilon``: privacy the party has spent so far."""

    kind: ClassVar[str] = "reply.embedding"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "embedding"
    embedding: torch.Tensor
    feature_seed: int
    features: int
    lengthscale: float
    epsilon: float = 0.0
    extra_lengthscales: str = ""

    def check(self, sender: str, expect: Expectations) -> None:
        _shape(sender, self.kind, "embedding", self.embedding, (self.features + 1, None))
        if not 1 <= self.embedding.shape[1] <= MAX_LABELS:
            raise ProtocolError(f"{sender}: {self.kind}.embedding has {self.embedding.shape[1]} label columns, "
                                f"expected 1 to {MAX_LABELS}")
        parse_lengthscales(self.extra_lengthscales, f"{sender}: {self.kind}")

    def answers(self, request: ReleaseEmbedding) -> bool:
        """Whether this is the embedding that ``request`` asked for (the same public feature map)."""
        return (self.feature_seed, self.features, self.lengthscale, self.extra_lengthscales,
                self.embedding.shape[1]) == (request.feature_seed, request.features, request.lengthscale,
                                             request.extra_lengthscales, request.num_labels)


@dataclass(frozen=True)
class Ack(Message):
    """A request done, nothing to report."""

    kind: ClassVar[str] = "reply.ack"
    direction: ClassVar[str] = "up"
    reveals: ClassVar[str] = "public"


REQUESTS: tuple[type[Message], ...] = (TrainDiscriminator, QueryFeedback, TrainAndUpload, TrainLocalGAN,
                                       ExportDiscriminator, ImportDiscriminator, SaveState, LoadState, Describe,
                                       GenerateAndUpload, TrainGeneratorEpoch, ReleaseEmbedding)
REPLIES: tuple[type[Message], ...] = (DiscriminatorStats, Feedback, DeltaUpload, WeightsReply, Description, Ack,
                                      GeneratorReply, EmbeddingRelease)
MESSAGE_TYPES: dict[str, type[Message]] = {cls.kind: cls for cls in REQUESTS + REPLIES}
IDENTIFIED_REQUESTS: tuple[type[Message], ...] = (TrainDiscriminator, QueryFeedback, TrainAndUpload, TrainLocalGAN,
                                                  GenerateAndUpload, TrainGeneratorEpoch)
"""Requests carrying a ``request_id``: those whose reply a private party computes from its data and secret
randomness. A new request type of that kind declares the same field and joins this tuple."""


def reply_types(request: type[Message]) -> tuple[type[Message], ...]:
    """The reply classes a request class may get (its ``replies``, resolved)."""
    try:
        return tuple(MESSAGE_TYPES[kind] for kind in request.replies)
    except KeyError as error:
        raise TypeError(f"{request.__qualname__}.replies names {error.args[0]!r}, which is not a message kind "
                        "in protocol.MESSAGE_TYPES") from None


# -- transport-neutral encoding ----------------------------------------------------------------
def encode(message: Message) -> tuple[str, dict[str, torch.Tensor], dict[str, Scalar]]:
    """(kind, tensors, scalars): what any transport needs to carry the message."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in message.tensors().items()}
    for name, value in _nested_stats(message).items():
        tensors.update({f"{name}/{k}": v for k, v in value.tensors().items()})
    return message.kind, tensors, message.scalars()


def decode(kind: str, tensors: dict[str, torch.Tensor], scalars: dict[str, Scalar]) -> Message:
    """Rebuild a message; unknown kinds and fields are protocol errors, never ignored."""
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise ProtocolError(f"unknown message kind {kind!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    stats_fields = {f.name for f in dataclasses.fields(DiscriminatorStats)}
    for key in scalars:  # a field, or a field of its nested DiscriminatorStats ("stats/d_loss")
        head, nested, rest = key.partition("/")
        if head not in names or (
                rest not in stats_fields if hints[head] is DiscriminatorStats else bool(nested)):
            raise ProtocolError(f"{kind}: unexpected scalar field {key!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        if hint is DiscriminatorStats:
            prefix = f"{f.name}/"
            fields: dict[str, Any] = {k[len(prefix):]: v for k, v in scalars.items() if k.startswith(prefix)}
            values[f.name] = DiscriminatorStats(**fields)
        elif f.name in tensors:
            values[f.name] = tensors[f.name]
        elif f.name in scalars:
            values[f.name] = scalars[f.name]
        elif any(key.startswith(f"{f.name}/") for key in tensors):
            prefix = f"{f.name}/"
            values[f.name] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        elif "dict" in str(hint) and "None" not in str(hint):
            values[f.name] = {}
    known_tensors = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in tensors:
        if key.split("/", 1)[0] not in known_tensors:
            raise ProtocolError(f"{kind}: unexpected field {key!r}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ProtocolError(f"{kind}: malformed message ({error})") from None


def _nested_stats(message: Message) -> dict[str, Message]:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)  # type: ignore[arg-type]
            if isinstance(getattr(message, f.name), Message)}

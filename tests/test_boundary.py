"""The boundary proof: no message of any strategy carries a real sample, and every field is declared.

Every exchange between the coordinator and a party passes the ``Parties`` observers; here one of
them inspects every request and reply of a short run (and of a resume, for ``LoadState``) of every
strategy in the registry, plain, under DP-SGD and (for the strategies it covers) under the gradient
sanitizer. Two properties are asserted:

1. No tensor in any message holds a real sample of the run's data, nor an affine image of one (any
   ``a * x + b``: the [-1, 1] scaling, uint8 bytes, negation...). Each image-sized row of a tensor,
   and each image-sized window of a flat one, is compared with every real sample by correlation;
   a correlation of +-1 would be an affine copy.
2. Each message is a declared protocol type and each field holds only its declared kind: tensors
   (float32 or int64), weight dicts of such tensors, nested statistics, or plain scalars.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest
import torch

from distgan import protocol as p
from distgan.assembly import plan_data
from distgan.config import Config
from distgan.runtime.local import build_local_parties
from distgan.strategies import STRATEGIES
from distgan.training import run_expectations, train

AFFINE_COPY = 0.999
"""|correlation| above which a row counts as an affine copy of a real sample."""
ALLOWED_DTYPES = (torch.float32, torch.int64)
RELEASE_ONCE_STRATEGIES = frozenset(name for name in STRATEGIES.names() if STRATEGIES.get(name).releases_once())
"""Strategies whose parties release one statistic of their data (dp-merf), under mean-embedding alone."""
FEEDBACK_ONLY_STRATEGIES = frozenset(name for name in STRATEGIES.names() if STRATEGIES.get(name).feedback_only()
                                     and name not in RELEASE_ONCE_STRATEGIES)
"""Strategies whose parties release no weights (the class says so), where the gradient sanitizer applies."""


def standardized(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows centred and scaled to unit norm (affine-invariant up to sign); and which rows vary at all."""
    rows = rows.double()
    centred = rows - rows.mean(dim=1, keepdim=True)
    norms = centred.norm(dim=1, keepdim=True)
    varying = norms.squeeze(1) > 1e-9
    return centred / norms.clamp_min(1e-12), varying


class BoundaryInspector:
    """Observer ``(party, request, reply)``: checks both messages, records what it saw."""

    def __init__(self, real_images: torch.Tensor) -> None:
        self.pixels = int(real_images[0].numel())
        self.real, varying = standardized(real_images.flatten(1).float())
        assert bool(varying.all())
        self.kinds: set[str] = set()
        self.tensors_checked = 0

    def __call__(self, party: int, request: p.Message, reply: p.Message) -> None:
        for message, direction in ((request, "down"), (reply, "up")):
            self.check_declared(message, direction)
            for name, tensor in self.all_tensors(message).items():
                self.check_no_real_sample(f"{message.kind}.{name} (party {party})", tensor)
            self.kinds.add(message.kind)

    # -- property 2: declared kinds ----------------------------------------------------------------------
    def check_declared(self, message: p.Message, direction: str) -> None:
        assert type(message) in p.MESSAGE_TYPES.values(), f"undeclared message type {type(message).__name__}"
        assert message.direction == direction, f"{message.kind} travelled {direction}"
        hints = typing.get_type_hints(type(message))
        for field in dataclasses.fields(message):  # type: ignore[arg-type]
            value = getattr(message, field.name)
            self.check_kind(f"{message.kind}.{field.name}", value, hints[field.name])

    def check_kind(self, where: str, value: object, hint: object) -> None:
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if value is None:
            assert type(None) in options, f"{where} is None but declared {hint}"
            return
        if isinstance(value, torch.Tensor):
            assert torch.Tensor in options, f"{where} is a tensor but declared {hint}"
            assert value.dtype in ALLOWED_DTYPES, f"{where} has dtype {value.dtype}"
        elif isinstance(value, dict):
            assert any(typing.get_origin(o) is dict for o in options), f"{where} is a dict but declared {hint}"
            for key, tensor in value.items():
                assert isinstance(key, str) and isinstance(tensor, torch.Tensor), f"{where}[{key!r}] is not a tensor"
                assert tensor.dtype in ALLOWED_DTYPES, f"{where}[{key!r}] has dtype {tensor.dtype}"
        elif isinstance(value, p.Message):
            assert type(value) in options, f"{where} is a {type(value).__name__} but declared {hint}"
            self.check_declared(value, value.direction)
        else:
            assert type(value) in (int, float, str, bool), f"{where} is a {type(value).__name__}"
            assert type(value) in options or (type(value) is int and float in options), f"{where}: {value!r} vs {hint}"
            if isinstance(value, str):
                assert len(value) <= 32, f"{where} is a long string ({len(value)} characters)"
            if isinstance(value, float):
                assert math.isfinite(value), f"{where} = {value}"

    @staticmethod
    def all_tensors(message: p.Message) -> dict[str, torch.Tensor]:
        tensors = dict(message.tensors())
        for field in dataclasses.fields(message):  # type: ignore[arg-type]
            nested = getattr(message, field.name)
            if isinstance(nested, p.Message):
                tensors.update({f"{field.name}/{k}": v for k, v in nested.tensors().items()})
        return tensors

    # -- property 1: no real sample, up to an affine map -------------------------------------------------
    def image_rows(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Rows of an image-shaped tensor: images, image gradients, weight rows over the pixels."""
        if tensor.dim() >= 1 and tensor.numel() and tensor.numel() % self.pixels == 0 and (
                tensor.shape[-1] == self.pixels or math.prod(tensor.shape[-3:]) == self.pixels):
            return tensor.detach().reshape(-1, self.pixels).float()
        return None

    def window_correlations(self, flat: torch.Tensor) -> torch.Tensor:
        """|correlation| of every image-sized window of a flat vector with every real sample,
        as one convolution (the real rows are centred, so window means drop out)."""
        x = flat.detach().double()
        windows = x.unfold(0, self.pixels, 1)  # a view: no copy
        sums = torch.cat([x.new_zeros(1), x.cumsum(0)])
        squares = torch.cat([x.new_zeros(1), (x * x).cumsum(0)])
        total = sums[self.pixels:] - sums[:-self.pixels]
        energy = squares[self.pixels:] - squares[:-self.pixels]
        centred_norm = (energy - total * total / self.pixels).clamp_min(0).sqrt()
        dots = torch.nn.functional.conv1d(x.float()[None, None], self.real.float()[:, None, :])[0].double()
        varying = centred_norm > 1e-6 * (windows.abs().amax(dim=1) + 1)
        return (dots[:, varying] / centred_norm[varying]).abs()

    def check_no_real_sample(self, where: str, tensor: torch.Tensor) -> None:
        self.tensors_checked += 1
        correlations = []
        rows = self.image_rows(tensor)
        if rows is not None:
            for chunk in rows.split(4096):
                normalized, varying = standardized(chunk)
                correlations.append((normalized[varying] @ self.real.T).abs().flatten())
        if tensor.dim() == 1 and tensor.numel() >= self.pixels:
            correlations.append(self.window_correlations(tensor).flatten())
        values = torch.cat([c.double() for c in correlations]) if correlations else torch.zeros(0)
        best = float(values.max()) if values.numel() else 0.0
        assert best < AFFINE_COPY, f"{where} holds an affine copy of a real sample (|correlation| {best:.6f})"


VARIANTS = ["round-robin[switch=epoch]", "server-d[fakes=party]"]
"""Strategy options that change what travels (G's weights instead of batches), run as strategies of their own."""


def short_config(make_config, strategy: str, privacy: str) -> Config:
    name, _, option = strategy.rstrip("]").partition("[")
    config = make_config(name, rounds=3, strategy__swap_every=1, strategy__download_fraction=0.2)
    if option:
        field_name, value = option.split("=")
        setattr(config.strategy, field_name, value)
    if privacy != "plain":
        config.privacy.epsilon, config.privacy.mechanism = 50.0, privacy
    return config


def run_inspected(config: Config, run_dir: Path, inspector: BoundaryInspector, resume: bool = False) -> None:
    strategy_class = STRATEGIES.get(config.strategy.name)
    parties = build_local_parties(config, run_dir, strategy_class.pooled_data,
                                  run_expectations(config, plan_data(config).data.shape))
    parties.observers.append(inspector)
    train(config, run_dir, resume=resume, quiet=True, parties=parties)


# The sanitizer covers only strategies whose parties release feedback alone; the others refuse it
# (test_the_sanitizer_refuses_strategies_that_send_weights), so they are not run under it here.
def covers(strategy: str, privacy: str) -> bool:
    """dp-merf's parties release under mean-embedding alone, and no other strategy's do."""
    if strategy in RELEASE_ONCE_STRATEGIES:
        return privacy in ("plain", "mean-embedding")
    return privacy != "mean-embedding" and (privacy != "gradient-sanitizer" or strategy in FEEDBACK_ONLY_STRATEGIES)


CASES = [(strategy, privacy) for strategy in STRATEGIES.names() + VARIANTS
         for privacy in ("plain", "dp-sgd", "gradient-sanitizer", "mean-embedding") if covers(strategy, privacy)]


@pytest.mark.parametrize("strategy, privacy", CASES)
def test_no_message_of_any_strategy_carries_a_real_sample(make_config, tmp_path, strategy: str,
                                                          privacy: str) -> None:
    config = short_config(make_config, strategy, privacy)
    inspector = BoundaryInspector(plan_data(config).data.images)
    run_inspected(config, tmp_path, inspector)
    config.train.rounds = 4  # resume one more round: LoadState and the party's restored state cross too
    run_inspected(config, tmp_path, inspector, resume=True)
    assert {"query.describe", "reply.description", "train.save_state", "train.load_state"} <= inspector.kinds
    assert inspector.kinds & {"reply.feedback", "reply.deltas", "reply.weights", "reply.generator",
                              "reply.embedding"}, inspector.kinds
    assert inspector.tensors_checked > (5 if strategy in RELEASE_ONCE_STRATEGIES else 10)  # dp-merf: one release
    if strategy in VARIANTS:  # G's weights (and for round-robin its Adam state) crossed and were inspected
        assert inspector.kinds & {"train.generator_epoch", "train.generate_upload"}, inspector.kinds


def test_the_inspector_catches_an_affine_copy_of_a_real_sample(make_config) -> None:
    """The check above can fail: a reply smuggling a real sample, rescaled, is caught."""
    config = short_config(make_config, "round-robin", "plain")
    images = plan_data(config).data.images
    inspector = BoundaryInspector(images)
    smuggled = (images[7].float() / 127.5 - 1.0) * 0.01 + 0.3  # [-1, 1] scaling, then any affine map
    gradients = torch.randn(1, 8, *images.shape[1:])
    gradients[0, 3] = smuggled
    reply = p.Feedback(p.DiscriminatorStats(), torch.zeros(1, 8), gradients)
    request = p.TrainDiscriminator(torch.zeros(1, 8, *images.shape[1:]), feedback=True)
    with pytest.raises(AssertionError, match="affine copy of a real sample"):
        inspector(0, request, reply)
    window = torch.cat([torch.randn(5), images[2].flatten().float(), torch.randn(9)])  # inside a flat vector
    with pytest.raises(AssertionError, match="affine copy"):
        inspector(0, request, p.DeltaUpload(p.DiscriminatorStats(), torch.arange(len(window)), window))
    with pytest.raises(AssertionError, match="dtype torch.uint8"):
        inspector(0, request, p.Feedback(p.DiscriminatorStats(), torch.zeros(1, 8),
                                         gradients.to(torch.uint8)))


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES.names()) - FEEDBACK_ONLY_STRATEGIES) + VARIANTS)
def test_the_sanitizer_refuses_strategies_that_send_weights(make_config, tmp_path, strategy: str) -> None:
    config = short_config(make_config, strategy, "gradient-sanitizer")
    with pytest.raises(ValueError, match="does not cover strategy"):
        train(config, tmp_path, quiet=True)


def test_a_dp_merf_coordinator_receives_nothing_but_the_noisy_embedding(make_config, tmp_path):
    """Under DP a dp-merf party's replies are its Description, acknowledgements and one noisy
    embedding per party, which differs from the exact one by noise of the planned size."""
    from distgan.privacy.random_features import RandomFeatures, embed_images, public_lengthscale

    config = short_config(make_config, "dp-merf", "mean-embedding")
    config.strategy.random_features = 64
    replies: list[tuple[int, p.Message]] = []
    inspector = BoundaryInspector(plan_data(config).data.images)

    def record(party: int, request: p.Message, reply: p.Message) -> None:
        inspector(party, request, reply)
        replies.append((party, reply))

    strategy_class = STRATEGIES.get(config.strategy.name)
    parties = build_local_parties(config, tmp_path, strategy_class.pooled_data,
                                  run_expectations(config, plan_data(config).data.shape))
    parties.observers.append(record)
    train(config, tmp_path, quiet=True, parties=parties)
    assert {reply.kind for _, reply in replies} == {"reply.description", "reply.embedding", "reply.ack"}
    releases = [(party, reply) for party, reply in replies if isinstance(reply, p.EmbeddingRelease)]
    assert sorted(party for party, _ in releases) == [0, 1]  # one release per party, in one round trip
    data = plan_data(config)
    for party, release in releases:
        share = data.data.subset(data.shares.indices[party])
        feature_map = RandomFeatures(release.feature_seed, release.features,
                                     public_lengthscale(784, config.strategy.kernel_scale), 784)
        exact = embed_images(share.images, share.labels, feature_map, release.embedding.shape[1])
        noise = (release.embedding - exact).double()
        assert float(noise.std()) > 0.1  # epsilon 50 still takes sigma ~0.2 of sensitivity 1
        assert release.epsilon > 0

"""One typed configuration per run.

Nested dataclasses, each field documented; every check lives in ``__post_init__`` and raises a
``ValueError`` that names the field and the value. The config is printed, written to
``config.json`` before training, and can be overridden from the command line with
``--set section.field=value``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _require(condition: bool, name: str, value: Any, expectation: str) -> None:
    if not condition:
        raise ValueError(f"{name}={value!r}: {expectation}")


def _positive_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, value,
             "must be a positive integer")


def _non_negative_int(name: str, value: Any, meaning_of_zero: str = "") -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, name, value,
             "must be a non-negative integer" + (f" ({meaning_of_zero})" if meaning_of_zero else ""))


def _positive_float(name: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
             and math.isfinite(value), name, value, "must be a positive finite number")


class NotPositiveNumber(ValueError):
    """An entry of a number list that is not a positive finite number (``entry``: the entry as given)."""

    def __init__(self, entry: Any) -> None:
        super().__init__(f"{entry!r} is not a positive finite number")
        self.entry = entry


def positive_numbers(parts: Any) -> tuple[float, ...]:
    """Each entry as a float; raises :class:`NotPositiveNumber` at the first that is not positive and finite
    (booleans included: ``True`` is not a number a user meant). Shared by config fields and message fields."""
    numbers: list[float] = []
    for part in parts:
        try:
            number = float(part) if not isinstance(part, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (number > 0 and math.isfinite(number)):
            raise NotPositiveNumber(part)
        numbers.append(number)
    return tuple(numbers)


def _float_tuple(name: str, value: Any) -> tuple[float, ...]:
    """A tuple of positive finite numbers from a tuple, a list (a saved config.json) or a comma string."""
    parts = value.split(",") if isinstance(value, str) else value
    _require(isinstance(parts, (tuple, list)), name, value, "must be a list of positive numbers")
    try:
        return positive_numbers(parts)
    except NotPositiveNumber as bad:
        raise ValueError(f"{name}={value!r}: every entry must be a positive finite number, got {bad.entry!r}") from None


def _fraction(name: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and 0 < value <= 1, name, value, "must lie in (0, 1]")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, value, f"must be one of {', '.join(choices)}")


@dataclass
class DataConfig:
    source: str = "mnist"
    """Data source, ``NAME`` or ``NAME:ARG`` (``mnist``, ``mnist:DIR``, ``fashion-mnist``, ``folder:DIR``, ``lsun:DIR``,
    ``fake``)."""
    split: str = "labels:0-4/5-9"
    """How samples are divided among parties: ``iid``, ``labels:0-4/5-9``, ``one-label``, ``dirichlet:ALPHA``."""
    parties: int = 2
    """Number of data holders."""
    image_size: int | None = None
    """Side of the square images fed to the models; None takes the model's natural size."""
    limit: int | None = None
    """Use only the first N samples of the source's train part (after a seeded shuffle); None uses all."""
    test: int | None = None
    """Samples held out as the test split (no party receives them: metrics' reference, audit's non-members)
    for sources without one of their own (``folder:``, ``lsun:``, ``fake``): a fixed draw, stratified by label.
    Must stay unset for ``mnist`` (a fixed 1,000-digit split) and IDX folders with ``t10k-*`` files."""
    labels: tuple[str, ...] | None = None
    """The run's label map: label k means the k-th name (``--set data.labels=0,1,2``). Image-folder
    parties name their labels by subfolder; each subfolder must be in the map (checked when a party
    joins), so a label means the same at every party. None: a folder's sorted subfolder names (one
    folder split among parties) or the source's own numeric labels; Flower parties with labelled
    folders of their own need it (``flower local --party-data`` declares their union)."""
    domain: str | None = None
    """Evaluation domain of the images: ``digits``, ``fashion`` (which evaluator the labelled metrics use) or
    ``none``; None takes the source's own (``mnist`` -> digits, ``fashion-mnist`` -> fashion, others none).
    A declared domain is checked against the data's labels (``distgan.metrics.domains``)."""

    def __post_init__(self) -> None:
        _require(isinstance(self.source, str) and self.source != "", "data.source", self.source,
                 "must be a non-empty string")
        _positive_int("data.parties", self.parties)
        if self.image_size is not None:
            _positive_int("data.image_size", self.image_size)
        if self.limit is not None:
            _positive_int("data.limit", self.limit)
        if self.test is not None:
            _positive_int("data.test", self.test)
        if self.labels is not None:
            self.labels = tuple(str(name) for name in self.labels)
            _require(len(self.labels) > 0 and len(set(self.labels)) == len(self.labels) and all(self.labels),
                     "data.labels", ",".join(self.labels), "must be distinct, non-empty label names")
        if self.domain is not None:
            _require(isinstance(self.domain, str) and self.domain.strip() == self.domain and self.domain != "",
                     "data.domain", self.domain, "must be a domain name (digits, fashion) or none")


@dataclass
class ModelConfig:
    name: str = "mlp-up"
    """Model family from the registry: ``mlp-up`` (the default: tuned MLP, G ending in a 2x transposed
    convolution), ``mlp`` (the same without it, the default before docs/TUNING.md round 3), ``paper-mlp``
    (Tables 1-2), ``dcgan`` (Tables 3-4)."""
    latent_dim: int = 64
    """Size of the generator's noise vector z."""
    hidden: int = 256
    """Width of the hidden layers of the MLP models."""
    d_hidden: int | None = None
    """mlp, mlp-up: width of D's hidden layers (2 x d_hidden, then d_hidden); None: ``hidden``. DP-SGD's noise on
    D's update grows with the square root of D's weights (docs/PRIVACY.md)."""
    channels: int = 64
    """Base channel count of the DCGAN models (the paper's ngf = ndf)."""
    d_dropout: float = 0.3
    """mlp, mlp-up: dropout after each hidden layer of D (docs/TUNING.md). Its masks come from the party's own
    seeded stream, so runs with it resume bit-exactly and agree across runtimes."""
    d_logit_bound: float | None = 2.0
    """mlp, mlp-up: soft bound C on D's logit, ``C * tanh(l / C)``, so G's gradient never vanishes; None: off."""
    norm: str = "batch"
    """Normalisation in the DCGAN discriminator: ``batch`` (the paper's), ``group`` or ``none``
    (per-sample gradients, and so DP-SGD, need ``group`` or ``none``). With ``batch`` the G gradient that
    avg-output, round-robin and md-gan assemble from per-sample feedback is approximate: batch norm mixes
    the batch and the cross terms are lost (2.6-4.5 % relative error measured at batch 32, cosine 0.999;
    tests/test_feedback_exactness.py); ``group`` and ``none`` are exact."""
    d_pool: str = "stride"
    """How the DCGAN discriminator's first two stages halve the image: ``stride`` (DCGAN's strided
    convolutions, Radford et al.) or ``max`` (Table 3 of the paper, which lists max_pool2d after the
    first two LeakyReLUs: there a stride-1 3x3 convolution, LeakyReLU, then 2x2 max-pooling)."""

    def __post_init__(self) -> None:
        _positive_int("model.latent_dim", self.latent_dim)
        _positive_int("model.hidden", self.hidden)
        if self.d_hidden is not None:
            _positive_int("model.d_hidden", self.d_hidden)
        _positive_int("model.channels", self.channels)
        _choice("model.norm", self.norm, ("batch", "group", "none"))
        _choice("model.d_pool", self.d_pool, ("stride", "max"))
        _require(isinstance(self.d_dropout, (int, float)) and 0 <= self.d_dropout < 1, "model.d_dropout",
                 self.d_dropout, "must lie in [0, 1)")
        if self.d_logit_bound is not None:
            _positive_float("model.d_logit_bound", self.d_logit_bound)


@dataclass
class TrainConfig:
    rounds: int = 4000
    """Number of rounds the coordinator runs."""
    local_steps: int = 1
    """D steps and G steps per party message; 1 reproduces the paper's per-batch algorithms."""
    d_steps: int = 1
    """D steps per G step: a party trains its D this many times on each generated batch, each time against
    a fresh real batch. Under DP-SGD several private D steps per G step let D keep up through the noise
    (Bie et al. 2023; docs/PRIVACY.md); each one is accounted."""
    batch_size: int = 128
    """Samples per step, real and generated alike."""
    lr_g: float = 2e-3
    """Adam learning rate of the generator (docs/TUNING.md round 3; the paper-mlp preset uses 2e-4)."""
    lr_d: float = 1e-3
    """Adam learning rate of every discriminator (half G's: at 2e-3 round-robin on 0-4 | 5-9 lost one
    party's half of the digits in 2 of 6 seeds, at 1e-3 in none of 4; docs/TUNING.md round 3)."""
    beta1: float = 0.5
    """Adam beta1 (0.5 as in DCGAN)."""
    beta2: float = 0.999
    """Adam beta2."""
    parties_per_round: int | None = None
    """Sample this many parties each round (as FL systems do); None uses all."""
    g_average: float | None = 0.998
    """Decay of an exponential moving average of G's weights, updated every round; the average (not the
    raw G) makes the samples, metrics and exports. None: the raw G. (docs/TUNING.md)"""

    def steps_per_epoch(self, samples: int) -> int:
        """Steps of one pass over ``samples`` records at ``batch_size`` (the last batch counts whole)."""
        return math.ceil(samples / self.batch_size)

    def __post_init__(self) -> None:
        _positive_int("train.rounds", self.rounds)
        _positive_int("train.local_steps", self.local_steps)
        _positive_int("train.d_steps", self.d_steps)
        _positive_int("train.batch_size", self.batch_size)
        _positive_float("train.lr_g", self.lr_g)
        _positive_float("train.lr_d", self.lr_d)
        _require(isinstance(self.beta1, (int, float)) and 0 <= self.beta1 < 1, "train.beta1", self.beta1,
                 "must lie in [0, 1)")
        _require(isinstance(self.beta2, (int, float)) and 0 <= self.beta2 < 1, "train.beta2", self.beta2,
                 "must lie in [0, 1)")
        if self.parties_per_round is not None:
            _positive_int("train.parties_per_round", self.parties_per_round)
        if self.g_average is not None:
            _require(isinstance(self.g_average, (int, float)) and 0 < self.g_average < 1, "train.g_average",
                     self.g_average, "must lie in (0, 1), or be None for no average")


@dataclass
class StrategyConfig:
    name: str = "round-robin"
    """Training strategy from the registry (``distgan train --help`` lists them)."""
    upload_fraction: float = 0.1
    """server-d: fraction theta_u of each party's D-weight deltas uploaded per round."""
    download_fraction: float | None = 1.0
    """server-d: fraction theta_d of the server D each party downloads before training (the entries that
    moved most since last sent); None: none. Default all, as Shokri & Shmatikov's parties do: without
    downloads each party's D drifts alone and the server D, a sparse sum of deltas taken at other
    weights, never becomes a useful critic (docs/RESULTS.md, Fig. 2)."""
    selection: str = "largest"
    """server-d: which deltas to upload, ``largest`` magnitude or ``random`` (Shokri & Shmatikov)."""
    server_update: str = "max"
    """server-d: how the server combines uploads, ``max`` (the paper's biggest delta), ``mean``, or ``sum``
    (Shokri & Shmatikov 2015's server, which adds every upload)."""
    weighted: bool = False
    """avg-output / md-gan: weight each party's feedback by its data size."""
    swap_every: int = 10
    """md-gan: rounds between discriminator swaps among parties."""
    swap_per_epoch: bool = False
    """md-gan: swap once per epoch instead (MD-GAN's own rule, E = 1 local epoch): every
    ceil(mean party size / batch size) rounds, from the parties' public sample counts."""
    random_features: int = 2000
    """dp-merf: random Fourier features of the released embedding (even; features / 2 frequencies). More
    features resolve the kernel better but spread the same noise over more coordinates (docs/PRIVACY.md)."""
    kernel_scale: float = 0.73
    """dp-merf: the Gaussian kernel's lengthscale is kernel_scale * sqrt(pixels) for images in [-1, 1], a
    public rule (0.73 is DP-MERF's MNIST choice); never a statistic of private data."""
    extra_kernel_scales: tuple[float, ...] = ()
    """dp-merf: further kernels in the same release (``--set strategy.extra_kernel_scales=0.3,0.15``): the
    random features are split evenly over kernel_scale and these scales (same rule), each block weighted
    1/sqrt(number of kernels), so every record's vector keeps norm 1 and the noise is unchanged. Narrower
    kernels let G match more than class means. Empty (the default): one kernel."""
    switch: str = "batch"
    """round-robin / centralized: when G moves on to the next party. ``batch``: after every batch (G stays on
    the platform; fakes go down, D's feedback comes up). ``epoch``: the paper's Alg. 3 -- G's weights and Adam
    state travel to the party, which trains D_j and G for one pass over its data (ceil(n_j / batch) steps)
    and sends G back; a round is then one epoch of every selected party, in turn."""
    fakes: str = "coordinator"
    """server-d: who generates the fakes each party trains D_j on. ``coordinator``: the platform sends the
    batches; ``party``: the platform sends G's weights and the party generates its own (a message whose
    size depends on G, not on train.local_steps)."""

    def __post_init__(self) -> None:
        _fraction("strategy.upload_fraction", self.upload_fraction)
        if self.download_fraction is not None:
            _fraction("strategy.download_fraction", self.download_fraction)
        _choice("strategy.selection", self.selection, ("largest", "random"))
        _choice("strategy.server_update", self.server_update, ("max", "mean", "sum"))
        _positive_int("strategy.swap_every", self.swap_every)
        _positive_int("strategy.random_features", self.random_features)
        _require(self.random_features % 2 == 0 and self.random_features >= 2, "strategy.random_features",
                 self.random_features, "must be even (cos and sin of each frequency)")
        _positive_float("strategy.kernel_scale", self.kernel_scale)
        self.extra_kernel_scales = _float_tuple("strategy.extra_kernel_scales", self.extra_kernel_scales)
        _require(len(self.extra_kernel_scales) + 1 <= self.random_features // 2, "strategy.extra_kernel_scales",
                 self.extra_kernel_scales, f"needs at least one of the {self.random_features // 2} frequencies "
                 "(strategy.random_features / 2) per kernel")
        _choice("strategy.switch", self.switch, ("batch", "epoch"))
        _choice("strategy.fakes", self.fakes, ("coordinator", "party"))


@dataclass
class PrivacyConfig:
    epsilon: float | None = None
    """Target epsilon per party; None with noise_multiplier None turns DP off."""
    delta: float | None = None
    """Target delta; None takes min(1e-5, 1/n) for a party with n samples."""
    max_grad_norm: float = 1.0
    """Per-sample clipping bound C (Opacus's name)."""
    noise_multiplier: float | None = None
    """Explicit noise multiplier sigma; when set, epsilon is only a budget that stops the run."""
    mechanism: str = "auto"
    """How a party is made private (docs/PRIVACY.md): ``dp-sgd`` on its discriminator (``auto``: every
    strategy) or ``gradient-sanitizer`` (GS-WGAN) on the feedback of feedback-only strategies; ``mean-embedding``
    is dp-merf's one Gaussian release (``auto`` picks it for dp-merf)."""
    count_noise: float = 20.0
    """Standard deviation of the Gaussian noise on the counts a private party publishes (``Description``:
    label histogram and sample count, sensitivity 1 under add/remove-one); released once per dataset
    and spent in the party's ledger (docs/PRIVACY.md)."""
    secure_mode: bool = False
    """Opacus's secure mode: noise and Poisson sampling from a cryptographically secure generator
    (``torchcsprng``, which must be installed) and noise robust to floating-point attacks."""

    def __post_init__(self) -> None:
        if self.epsilon is not None:
            _positive_float("privacy.epsilon", self.epsilon)
        if self.delta is not None:
            _require(isinstance(self.delta, (int, float)) and 0 < self.delta < 1, "privacy.delta", self.delta,
                     "must lie in (0, 1)")
        _positive_float("privacy.max_grad_norm", self.max_grad_norm)
        if self.noise_multiplier is not None:
            _positive_float("privacy.noise_multiplier", self.noise_multiplier)
        _choice("privacy.mechanism", self.mechanism, ("auto", "dp-sgd", "gradient-sanitizer", "mean-embedding"))
        _positive_float("privacy.count_noise", self.count_noise)
        _require(isinstance(self.secure_mode, bool), "privacy.secure_mode", self.secure_mode, "must be true or false")
        if self.secure_mode and importlib.util.find_spec("torchcsprng") is None:
            raise ValueError("privacy.secure_mode=true needs the torchcsprng package (Opacus's cryptographically "
                             "secure generator), which is not installed here: pip install torchcsprng (its last "
                             "release, 0.2.1 of 2021, builds only against old PyTorch versions); or leave "
                             "privacy.secure_mode off (noise then comes from PyTorch's Mersenne Twister, seeded "
                             "from OS entropy)")

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None


@dataclass
class RuntimeConfig:
    seed: int = 0
    """Seed of every random number generator of the run."""
    workers: int = 0
    """0 runs parties in this process; N >= 1 spreads them over N worker processes."""
    worker_threads: int = 0
    """Torch threads of each worker process: 0 shares the cores this process may use among the workers
    (cores // workers, at least 1); N gives each worker N (e.g. 1 to give each party one core of its own)."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when one is present)."""
    on_party_failure: str = "continue"
    """When a party fails: ``continue`` the round with the others, ``stop`` the run, or ``wait``: restart a
    party whose worker process died (``--workers``), reload its last saved state and retry (a party that
    cannot be restarted is then left out, as with ``continue``)."""

    def __post_init__(self) -> None:
        _non_negative_int("runtime.seed", self.seed)
        _non_negative_int("runtime.workers", self.workers, "0: the parties in this process")
        _non_negative_int("runtime.worker_threads", self.worker_threads, "0: the cores shared out among the workers")
        _require(self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"), "runtime.device",
                 self.device, "must be cpu, cuda, cuda:N or auto")
        _choice("runtime.on_party_failure", self.on_party_failure, ("continue", "stop", "wait"))


@dataclass
class OutputConfig:
    sample_every: int = 250
    """Rounds between sample-grid PNGs (fixed latent vectors, so frames compare)."""
    checkpoint_every: int = 250
    """Rounds between checkpoints (atomic, resumable)."""
    eval_every: int = 500
    """Rounds between cheap metrics during training; the full set runs at the end."""
    log_every: int = 50
    """Rounds between progress lines."""
    metrics: tuple[str, ...] | None = None
    """Metrics computed at the end; None takes the defaults for the data source."""

    def __post_init__(self) -> None:
        for name in ("sample_every", "checkpoint_every", "eval_every", "log_every"):
            _positive_int(f"output.{name}", getattr(self, name))
        if self.metrics is not None:
            self.metrics = tuple(self.metrics)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        if self.strategy.switch == "epoch":
            _require(self.strategy.name in ("round-robin", "centralized"), "strategy.switch", self.strategy.switch,
                     f"switching per epoch applies to round-robin and centralized, not {self.strategy.name}")
            _require(self.train.local_steps == 1, "train.local_steps", self.train.local_steps,
                     "must be 1 with strategy.switch=epoch (a party's visit is one pass over its data)")
        if self.strategy.fakes == "party":
            _require(self.strategy.name == "server-d", "strategy.fakes", self.strategy.fakes,
                     f"parties generating their own fakes applies to server-d, not {self.strategy.name}")
        if self.train.parties_per_round is not None:
            _require(self.train.parties_per_round <= self.data.parties, "train.parties_per_round",
                     self.train.parties_per_round, f"must not exceed data.parties={self.data.parties}")
        if self.privacy.enabled and self.privacy.mechanism != "gradient-sanitizer" and self.strategy.name != "dp-merf":
            # DP-SGD clips per-sample gradients; batch norm mixes the samples of a batch (Opacus refuses it).
            _require(not (self.model.name == "dcgan" and self.model.norm == "batch"), "model.norm", self.model.norm,
                     "differential privacy (DP-SGD on the discriminator) needs per-sample gradients, which batch "
                     "norm mixes across the batch; use --set model.norm=group or none")

    def steps_per_visit(self, samples: int) -> int:
        """D and G steps of one party message: ``train.local_steps``, or with ``strategy.switch=epoch`` one
        pass over the party's ``samples`` (``ceil(samples / batch_size)``; each step draws its own batch)."""
        return self.train.steps_per_epoch(samples) if self.strategy.switch == "epoch" else self.train.local_steps

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        sections: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(f"unknown config section {key!r}; valid: {', '.join(known)}")
            section_cls = _section_class(key)
            if not isinstance(value, dict):
                # ValueError like every other bad-config error, so callers catch one type
                raise ValueError(f"config section {key!r} must be an object, got {value!r}")  # noqa: TRY004
            valid = {f.name for f in dataclasses.fields(section_cls)}
            for name in value:
                if name not in valid:
                    raise ValueError(f"unknown config field {key}.{name}; valid: {', '.join(sorted(valid))}")
            sections[key] = section_cls(**value)
        return cls(**sections)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such config file") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(raw)

    def with_overrides(self, assignments: list[str]) -> Config:
        """Apply ``section.field=value`` strings; the value is parsed by the field's declared type."""
        raw = self.to_dict()
        for assignment in assignments:
            if "=" not in assignment:
                raise ValueError(f"--set {assignment!r}: expected section.field=value")
            dotted, text = assignment.split("=", 1)
            if dotted.count(".") != 1:
                raise ValueError(f"--set {assignment!r}: expected section.field=value, e.g. train.lr_g=1e-3")
            section, name = dotted.split(".")
            if section not in raw:
                raise ValueError(f"--set {assignment!r}: unknown section {section!r}; valid: {', '.join(raw)}")
            hints = typing.get_type_hints(_section_class(section))
            if name not in hints:
                raise ValueError(f"--set {assignment!r}: unknown field {dotted!r}; "
                                 f"valid: {', '.join(sorted(hints))}")
            raw[section][name] = parse_value(text, hints[name], dotted)
        return Config.from_dict(raw)


def _section_class(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def parse_value(text: str, annotation: Any, name: str) -> Any:
    """Parse a command-line string into the type a config field declares."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        return parse_value(text, candidates[0], name)
    if origin is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a {annotation.__name__}") from None
    return text


SHORT_NAMES: dict[str, tuple[str, str]] = {
    "strategy": ("strategy", "name"), "data": ("data", "source"), "split": ("data", "split"),
    "parties": ("data", "parties"), "model": ("model", "name"), "rounds": ("train", "rounds"),
    "local_steps": ("train", "local_steps"), "batch_size": ("train", "batch_size"),
    "seed": ("runtime", "seed"), "workers": ("runtime", "workers"), "device": ("runtime", "device"),
    "parties_per_round": ("train", "parties_per_round"), "dp_epsilon": ("privacy", "epsilon"),
    "dp_delta": ("privacy", "delta"), "max_grad_norm": ("privacy", "max_grad_norm"),
    "noise_multiplier": ("privacy", "noise_multiplier"),
}
"""Short name -> (section, field): ``distgan train``'s one-to-one flags and ``distgan.train``'s keywords."""


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """A copy of ``config`` with typed values set: keys are short names (``rounds``), ``section.field``
    or ``section__field`` (a Python keyword); a string is parsed like ``--set``. Validated as a whole."""
    raw = config.to_dict()
    for key, value in values.items():
        dotted = ".".join(SHORT_NAMES[key]) if key in SHORT_NAMES else key.replace("__", ".", 1)
        section, _, name = dotted.partition(".")
        if section not in raw or not name:
            raise ValueError(f"unknown setting {key!r}: use a short name ({', '.join(SHORT_NAMES)}), "
                             "section.field or section__field")
        hints = typing.get_type_hints(_section_class(section))
        if name not in hints:
            raise ValueError(f"unknown setting {key!r}: no field {dotted!r}; valid: {', '.join(sorted(hints))}")
        raw[section][name] = parse_value(value, hints[name], dotted) if isinstance(value, str) else value
    return Config.from_dict(raw)

"""A training run from start to end: run folder, parties, strategy, coordinator, resume."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from distgan import protocol as p
from distgan import run_folder
from distgan.assembly import resolve_device, test_split_statement
from distgan.checkpoint import CheckpointError
from distgan.config import Config
from distgan.coordinator import Coordinator, RoundHook
from distgan.generator import GeneratorTrainer
from distgan.health import CollapseDetector, stale_feedback_warning
from distgan.metrics import attach_metrics
from distgan.models import build_models
from distgan.models.conditional import label_conditional
from distgan.parties import ModelReference, Parties
from distgan.plots import plot_losses
from distgan.report import attach_report
from distgan.run_folder import RunFolderError, checkpoint_stems, read_jsonl
from distgan.runtime.local import build_local_parties
from distgan.strategies import STRATEGIES, StrategyContext

log = logging.getLogger("distgan")


def default_run_dir(config: Config, root: Path = Path("runs")) -> Path:
    numbers = [int(m.group(1)) for d in root.glob("*") if (m := re.match(r"(\d{5})-", d.name))]
    return root / f"{max(numbers, default=-1) + 1:05d}-{config.strategy.name}-{config.data.parties}p"


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunFolderError(f"{run_dir}: folder exists and is not empty; use --resume {run_dir} to continue "
                                 "that run, or --overwrite to replace it")
        import shutil

        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise RunFolderError(f"{run_dir}: cannot write the run folder ({error.strerror or error})") from None


load_run_config = run_folder.load_config


def config_differences(a: Config, b: Config) -> list[str]:
    flat_a, flat_b = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [f"{key}: {flat_a.get(key)!r} != {flat_b.get(key)!r}" for key in sorted(set(flat_a) | set(flat_b))
            if flat_a.get(key) != flat_b.get(key)]


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def setup_logging(run_dir: Path, quiet: bool = False, console: bool = True) -> None:
    """``log.txt`` in the run folder gets the ``distgan`` logger's lines. ``console`` (the CLI's
    setting): progress lines on the terminal too, unless ``quiet``, and the logger stops propagating
    so a host's root handlers do not print them twice. ``console=False`` (a notebook, the Python
    API) leaves propagation to the host's logging setup."""
    logger = logging.getLogger("distgan")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        if getattr(handler, "_distgan", False):
            logger.removeHandler(handler)
            handler.close()
    file_handler = logging.FileHandler(run_dir / run_folder.LOG)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handlers: list[logging.Handler] = [file_handler]
    if console and not quiet:
        terminal = logging.StreamHandler()
        terminal.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(terminal)
    for handler in handlers:
        handler._distgan = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if console:
        logger.propagate = False


def build_coordinator(config: Config, run_dir: Path, parties: Parties | None = None) -> Coordinator:
    """Everything a run needs, wired; ``parties`` may come from another runtime (e.g. Flower)."""
    strategy_class = STRATEGIES.get(config.strategy.name)
    torch.manual_seed(config.runtime.seed)  # only for libraries that draw from the global RNG
    if parties is None:
        parties = build_local_parties(config, run_dir, strategy_class.pooled_data)
    if not parties.request_session:  # the run's name in request ids; a resume takes it from the checkpoint
        parties.request_session = uuid.uuid4().hex[:12]
    # The parties hold the data, the coordinator none: ask them first; the image shape comes from them.
    descriptions = parties.request_all(p.Describe())
    image_shape = described_image_shape(descriptions)
    factory = build_models(config.model, image_shape)
    if strategy_class.label_conditional:
        factory = label_conditional(config.model, image_shape, described_label_count(descriptions))
    with torch.device("meta"):  # shapes only: no memory, no draw from any RNG
        models = ModelReference.of(factory.generator(), factory.discriminator())
    parties.configure(run_expectations(config, image_shape), models)
    sizes = {}
    for party, description in sorted(descriptions.items()):
        assert isinstance(description, p.Description)
        sizes[party] = description.samples
        labels = [i for i, c in enumerate(description.label_counts.tolist()) if c > 0]
        log.info("party %d: %d samples, labels %s", party, description.samples, labels or "unlabelled")
    test_split = test_split_statement(config)
    log.info("test split (no party holds it): %s", test_split)
    run_folder.write_parties(run_dir, {j: {"samples": sizes[j],
                                           "label_counts": descriptions[j].label_counts.tolist()}  # type: ignore
                                       for j in sizes}, test_split)
    trainer = GeneratorTrainer(factory, config.train, config.runtime.seed, resolve_device(config.runtime.device))
    strategy = strategy_class(StrategyContext(config, trainer, factory, sizes))
    return Coordinator(config, run_dir, parties, strategy)


def run_expectations(config: Config, image_shape: tuple[int, int, int]) -> p.Expectations:
    return p.Expectations(image_shape, config.train.batch_size, config.train.local_steps * 4)


def described_label_count(descriptions: dict[int, p.Message]) -> int:
    """The number of labels of the parties' data source (1 when it is unlabelled)."""
    return max([1] + [len(d.label_counts) for d in descriptions.values()])  # type: ignore[attr-defined]


def described_image_shape(descriptions: dict[int, p.Message]) -> tuple[int, int, int]:
    """The one image shape every party reported; parties that disagree cannot train one G."""
    shapes = {j: tuple(d.image_shape.tolist()) for j, d in descriptions.items()  # type: ignore[attr-defined]
              if getattr(d, "image_shape", None) is not None}
    if not shapes:
        raise ValueError("no party reported its image shape (Describe reply without image_shape)")
    if len(set(shapes.values())) > 1:
        raise ValueError("parties hold images of different shapes: " + ", ".join(
            f"party {j}: {'x'.join(map(str, shape))}" for j, shape in sorted(shapes.items())))
    channels, height, width = next(iter(shapes.values()))
    return int(channels), int(height), int(width)


def train(config: Config, run_dir: Path, resume: bool = False, quiet: bool = False,
          parties: Parties | None = None, round_hooks: Sequence[RoundHook] = (), *,
          embedded: bool = False) -> Coordinator:
    """Run (or continue) training in ``run_dir``; the caller has checked the folder. ``parties``
    from another runtime (Flower's ServerApp passes its own, and a hook adding its message
    overhead to each round's stats); None builds the local runtime.

    ``embedded`` (the Python API, a notebook): no console handler and the ``distgan`` logger's
    propagation left alone, torch's global RNG seeded only inside a fork that is restored
    afterwards (same numbers as the CLI, no change to the host's RNG), and no SIGINT handler
    (Ctrl-C / a kernel interrupt raises KeyboardInterrupt at once; the last checkpoint is kept)."""
    if not embedded:
        return _train(config, run_dir, resume, quiet, parties, round_hooks, handle_sigint=True, console=True)
    device = resolve_device(config.runtime.device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        return _train(config, run_dir, resume, quiet, parties, round_hooks, handle_sigint=False, console=False)


def _train(config: Config, run_dir: Path, resume: bool, quiet: bool, parties: Parties | None,
           round_hooks: Sequence[RoundHook], handle_sigint: bool, console: bool) -> Coordinator:
    if not resume:
        run_folder.write_config(run_dir, config)
    setup_logging(run_dir, quiet, console)
    log.info("run folder: %s", run_dir)
    if (stale := stale_feedback_warning(config)) is not None:
        log.warning("%s", stale)
    try:
        coordinator = build_coordinator(config, run_dir, parties)
    except BaseException:
        if not resume:
            discard_unstarted_run(run_dir)
        raise
    try:  # metrics first: round_hooks may read the record["metrics"] they add
        attach_metrics(coordinator)
        attach_report(coordinator)
    except BaseException:
        coordinator.parties.close()
        if not resume:
            discard_unstarted_run(run_dir)
        raise
    coordinator.hooks.append(CollapseDetector.for_run(config, run_dir))
    coordinator.hooks.extend(round_hooks)
    coordinator.handle_sigint = handle_sigint
    try:
        if resume and checkpoint_stems(coordinator.checkpoint_dir):
            restored = coordinator.restore_latest()
            log.info("resumed from the checkpoint of round %d", restored)
        elif resume:
            log.info("no checkpoint yet: starting %s from round 0", run_dir)
            (run_dir / run_folder.STATS).unlink(missing_ok=True)
        coordinator.run()
        finish(coordinator)
    finally:
        coordinator.parties.close()
    if coordinator.interrupted and coordinator.round < config.train.rounds:
        raise KeyboardInterrupt  # after the checkpoint and the end-of-run outputs: the caller exits as interrupted
    return coordinator


def discard_unstarted_run(run_dir: Path) -> None:
    """A run whose setup failed (bad data, a party that cannot start) leaves no half-made run folder:
    remove what :func:`train` wrote before the failure."""
    for handler in list(logging.getLogger("distgan").handlers):
        if getattr(handler, "_distgan", False) and isinstance(handler, logging.FileHandler):
            logging.getLogger("distgan").removeHandler(handler)
            handler.close()
    for name in (run_folder.CONFIG, run_folder.LOG, run_folder.PARTIES):
        (run_dir / name).unlink(missing_ok=True)


def finish(coordinator: Coordinator) -> None:
    """What every run writes at its end: loss plot (metrics and report hook in via end_hooks)."""
    plot_losses(read_jsonl(coordinator.stats_path), coordinator.run_dir / run_folder.LOSSES,
                f"{coordinator.config.strategy.name}, {coordinator.parties.count} parties")


__all__ = ["CheckpointError", "RunFolderError", "build_coordinator", "check_new_run_dir", "config_differences",
           "default_run_dir", "load_run_config", "train"]

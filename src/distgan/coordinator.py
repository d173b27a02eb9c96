"""The platform side of a run: rounds, the run folder, checkpoints and resume.

The coordinator owns G (through :class:`~distgan.generator.GeneratorTrainer`) and the strategy's
state; it talks to parties only through the ``Parties`` handle. Each round appends one line to
``stats.jsonl``; every ``output.sample_every`` rounds it saves a sample grid of fixed latents;
every ``output.checkpoint_every`` rounds it checkpoints itself and asks every party to checkpoint
its own state, the coordinator's record written last so that a half-written checkpoint is never
taken for a complete one.

Ctrl-C (SIGINT) does not cut a round in half: the round in progress finishes, then the run writes its
samples, a checkpoint and its end-of-run outputs and stops (``interrupted`` is set). A second Ctrl-C
stops at once, without a checkpoint of a half-done round: ``--resume`` redoes it from the last one.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distgan import protocol as p
from distgan import run_folder
from distgan.checkpoint import (
    optimizer_from_tensors,
    optimizer_to_tensors,
    prefixed,
    save_checkpoint,
    unprefixed,
)
from distgan.config import Config
from distgan.images import save_grid
from distgan.parties import Parties
from distgan.privacy.budget import BudgetMonitor
from distgan.run_folder import checkpoint_stems, truncate_jsonl  # noqa: F401  (checkpoint_stems: old import path)
from distgan.seeding import make_generator
from distgan.strategies.base import RoundResult, Strategy

log = logging.getLogger("distgan")

GRID_SAMPLES = 64
RoundHook = Callable[["Coordinator", int, dict[str, Any]], None]


@dataclass
class Progress:
    """Rates and ETA for the progress line."""

    started: float
    first_round: int

    def line(self, round_number: int, total: int, record: dict[str, Any]) -> str:
        elapsed = time.perf_counter() - self.started
        done = round_number - self.first_round
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - round_number) / rate if rate > 0 else float("inf")
        d_losses = "/".join(f"{s['d_loss']:.2f}" for s in record["parties"].values())
        extras = "".join(f" | {k} {v:.3g}" for k, v in record.get("metrics", {}).items())
        # Slow rounds (a deployed message costs seconds) read as seconds per round, never "0.0 rounds/s".
        speed = f"{rate:.1f} rounds/s" if rate >= 1 or rate == 0 else f"{1 / rate:.1f} s/round"
        return (f"round {round_number}/{total} | D {d_losses} | G {record['g_loss']:.2f} | "
                f"{speed} | ETA {_duration(eta)}{extras}")


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Coordinator:
    def __init__(self, config: Config, run_dir: Path, parties: Parties, strategy: Strategy) -> None:
        self.config = config
        self.run_dir = run_dir
        self.parties = parties
        self.strategy = strategy
        self.trainer = strategy.trainer
        self.round = 0
        self.elapsed_s = 0.0
        self.hooks: list[RoundHook] = []
        self.end_hooks: list[Callable[[Coordinator], None]] = []
        self.stop_reason: str | None = None
        """Set by a round hook to end the run cleanly after the current round (checkpoint, samples, report)."""
        self.interrupted = False
        """Ctrl-C arrived: the run stopped after the round it was in, with a checkpoint."""
        self._round_in_progress = False
        self.handle_sigint = True
        """Install the finish-the-round Ctrl-C handler while rounds run (off when embedded in a notebook)."""
        self.budget_monitor = BudgetMonitor(config) if config.privacy.enabled else None
        if self.budget_monitor is not None:
            self.hooks.append(self.budget_monitor)
        self.grid_latents = torch.randn(GRID_SAMPLES, self.trainer.factory.latent_dim,
                                        generator=make_generator(config.runtime.seed, "grid-latents"))
        self._selection_rng = make_generator(config.runtime.seed, "party-selection")

    # -- folders --------------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return run_folder.checkpoint_dir(self.run_dir)

    @property
    def stats_path(self) -> Path:
        return self.run_dir / run_folder.STATS

    # -- the loop ---------------------------------------------------------------------------------------
    def train_round(self, selected: list[int]) -> RoundResult:
        """The strategy's round ``self.round + 1`` with the parties ``selected``, then G's weight average."""
        self.parties.begin_round(self.round + 1)
        result = self.strategy.run_round(self.round, self.parties, selected)
        self.trainer.update_average(self.round + 1, result.g_steps)
        return result

    def run(self) -> None:
        total = self.config.train.rounds
        progress = Progress(time.perf_counter(), self.round)
        out = self.config.output
        if self.round == 0:
            self.save_samples()
        if self.budget_monitor is not None and self.budget_monitor.spent_before_start(self):
            log.warning("not running round %d: %s", self.round + 1, self.stop_reason)
            total = self.round  # a resumed run whose privacy budget is used up goes straight to its end
        try:
            with self.stats_path.open("a") as stats_file, self._finish_round_on_interrupt():
                while self.round < total:
                    self._round_in_progress = True
                    started = time.perf_counter()
                    traffic_before = _snapshot(self.parties)
                    result = self.train_round(self._select_parties())
                    seconds = time.perf_counter() - started
                    self.elapsed_s += seconds
                    self.round += 1
                    record = self._record(result, seconds, traffic_before)
                    for hook in self.hooks:
                        hook(self, self.round, record)
                    stats_file.write(json.dumps(record) + "\n")
                    self._round_in_progress = False
                    if self.round % out.log_every == 0 or self.round == total:
                        stats_file.flush()
                        log.info(progress.line(self.round, total, record))
                    if self.round % out.sample_every == 0 or self.round == total:
                        self.save_samples()
                    checkpointed = self.round % out.checkpoint_every == 0 or self.round == total
                    if checkpointed:
                        stats_file.flush()
                        self.save_checkpoint()
                    if self.stop_reason is not None and self.round < total:
                        stats_file.flush()
                        log.warning("stopping after round %d of %d: %s", self.round, total, self.stop_reason)
                        self.save_samples()
                        if not checkpointed:
                            self.save_checkpoint()
                        break
        except KeyboardInterrupt:
            if self._round_in_progress:  # G and some parties may be a part-round ahead: keep the last checkpoint
                log.warning("interrupted during round %d: its work is dropped; --resume continues from the last "
                            "checkpoint", self.round + 1)
            else:
                log.warning("interrupted at round %d: writing a checkpoint so --resume continues from here",
                            self.round)
                self.save_checkpoint()
            raise
        for end_hook in self.end_hooks:
            end_hook(self)

    @contextmanager
    def _finish_round_on_interrupt(self) -> Iterator[None]:
        """While rounds run, the first Ctrl-C asks for a clean stop after the current round."""
        if not self.handle_sigint or threading.current_thread() is not threading.main_thread():
            yield  # signal handlers live in the main thread only (a runtime may run us elsewhere)
            return

        def on_interrupt(signum: int, frame: object) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.stop_reason = "interrupted (Ctrl-C)"
            log.warning("Ctrl-C: finishing round %d, then writing a checkpoint (Ctrl-C again to quit at once)",
                        self.round + 1)

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)

    def _select_parties(self) -> list[int]:
        active = self.parties.active
        wanted = self.config.train.parties_per_round
        if wanted is None or wanted >= len(active):
            return active
        chosen = torch.randperm(len(active), generator=self._selection_rng)[:wanted]
        return sorted(active[i] for i in chosen.tolist())

    def _record(self, result: RoundResult, seconds: float, traffic_before: dict[str, dict[int, int]]) -> dict[str, Any]:
        after = _snapshot(self.parties)
        parties: dict[str, dict[str, float]] = {}
        for party, stats in sorted(result.party_stats.items()):
            parties[str(party)] = {
                "d_loss": stats.d_loss, "d_real": stats.d_real, "d_fake": stats.d_fake,
                "epsilon": stats.epsilon,
                "bytes_down": after["down"].get(party, 0) - traffic_before["down"].get(party, 0),
                "bytes_up": after["up"].get(party, 0) - traffic_before["up"].get(party, 0),
            }
        bytes_down = sum(after["down"].values()) - sum(traffic_before["down"].values())
        bytes_up = sum(after["up"].values()) - sum(traffic_before["up"].values())
        return {"round": self.round, "g_loss": result.g_loss, "parties": parties, "seconds": seconds,
                "elapsed_s": self.elapsed_s, "bytes_down": bytes_down, "bytes_up": bytes_up,
                "failed_parties": sorted(self.parties.failed), **result.extra}

    # -- samples ----------------------------------------------------------------------------------------
    def save_samples(self) -> Path:
        images = self.trainer.sample(self.grid_latents, self.strategy.sampling_generator())
        path = run_folder.sample_grid_path(self.run_dir, self.round)
        save_grid(images, path)
        return path

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Parties first, then the coordinator's files; its JSON, written last, marks completion."""
        replies = self.parties.request_all(p.SaveState(self.round))
        missing = [j for j in self.parties.active if j not in replies]
        tensors = prefixed("generator", self.trainer.module.state_dict())
        optimizer_tensors, optimizer_meta = optimizer_to_tensors(self.trainer.optimizer, "g_optimizer")
        tensors.update(optimizer_tensors)
        tensors["latent_rng"] = self.trainer.rng.get_state()
        tensors["selection_rng"] = self._selection_rng.get_state()
        tensors.update(prefixed("strategy", self.strategy.state_tensors()))
        sampler = self.strategy.sampling_generator()
        if sampler is not self.trainer.module:
            tensors.update(prefixed("sampler", sampler.state_dict()))
        meta = {"round": self.round, "g_average_clock": self.trainer.average_clock, "image_shape": list(self.trainer.factory.image_shape), "elapsed_s": self.elapsed_s, "g_optimizer": optimizer_meta,
                "failed_parties": {str(k): v for k, v in self.parties.failed.items()},
                "parties_without_checkpoint": missing, "config": self.config.to_dict(),
                "request_session": self.parties.request_session}
        stem = run_folder.round_stem(self.checkpoint_dir, self.round)
        save_checkpoint(stem, tensors, meta)
        run_folder.prune_checkpoints(self.checkpoint_dir)
        return stem

    def restore_latest(self) -> int:
        """Load the newest intact checkpoint (falling back to the previous one); returns its round."""
        tensors, meta = run_folder.newest_intact(
            self.checkpoint_dir, on_skip=lambda error: log.warning("skipping checkpoint: %s", error),
            purpose="to resume from")
        self._restore(tensors, meta)
        return self.round

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.trainer.module.load_state_dict(unprefixed("generator", tensors))
        optimizer_from_tensors(self.trainer.optimizer, "g_optimizer", tensors, meta["g_optimizer"])
        self.trainer.rng.set_state(tensors["latent_rng"])
        self._selection_rng.set_state(tensors["selection_rng"])
        self.strategy.load_state_tensors(unprefixed("strategy", tensors))
        sampler = self.strategy.sampling_generator()
        if sampler is not self.trainer.module:
            sampler.load_state_dict(unprefixed("sampler", tensors))
        self.round = int(meta["round"])
        self.trainer.average_clock = int(meta.get("g_average_clock", self.round))
        self.elapsed_s = float(meta["elapsed_s"])
        self.parties.failed.update({int(k): v for k, v in meta["failed_parties"].items()})
        # The run's name in request ids: a resumed run repeats the ids of the rounds it redoes, so
        # private parties answer them from their journals (the first replies), never with new noise.
        self.parties.request_session = str(meta.get("request_session", self.parties.request_session))
        self.parties.request_all(p.LoadState(self.round))
        truncate_jsonl(self.stats_path, self.round)
        truncate_jsonl(self.run_dir / run_folder.METRICS, self.round)


def _snapshot(parties: Parties) -> dict[str, dict[int, int]]:
    return {"down": dict(parties.traffic.bytes_down), "up": dict(parties.traffic.bytes_up)}

"""Pieces shared by the commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from distgan.registry import Registry


class CommandError(ValueError):
    """A user error the CLI reports in one line, with a non-zero exit."""


@dataclass(frozen=True)
class Command:
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str


COMMANDS: Registry[Command] = Registry("command")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value

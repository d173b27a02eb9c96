"""distgan presets: list the named configurations."""

from __future__ import annotations

import argparse

from distgan.cli.common import COMMANDS, Command
from distgan.presets import PRESETS


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    width = max(len(name) for name in PRESETS.names())
    for name in PRESETS.names():
        print(f"{name:<{width}}  {PRESETS.summary(name)}")
    return 0


COMMANDS.register("presets", "list named presets, one line each")(Command(
    configure, run, "List the named presets (use one with `distgan train --preset NAME`)."))

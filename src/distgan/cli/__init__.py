"""The ``distgan`` command line: one module per command, registered in ``COMMANDS``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

# Importing a command module registers it.
from distgan.cli import (  # noqa: F401
    audit,
    evaluate,
    evaluator,
    experiment,
    flower,
    presets_cmd,
    report_cmd,
    sample,
    train,
)
from distgan.cli.common import COMMANDS, CommandError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distgan",
        description="Train one GAN across several data holders without moving their raw samples "
                    "(Distributed-GAN, its three strategies and baselines).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS.names():
        configure: Callable[[argparse.ArgumentParser], None] = COMMANDS.get(name).configure
        command = sub.add_parser(name, help=COMMANDS.summary(name), description=COMMANDS.get(name).description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        configure(command)
        command.set_defaults(run=COMMANDS.get(name).run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (CommandError, ValueError) as error:
        print(f"distgan {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distgan {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"distgan {args.command}: error: {error}", file=sys.stderr)
        return 1
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())

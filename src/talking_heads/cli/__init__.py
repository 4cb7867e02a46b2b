"""`talking-heads` command line. Subcommands only parse arguments and call the library.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its subcommands and sets
`func` (called with the parsed namespace; returns an exit code). Heavy imports stay inside those functions
so that `talking-heads --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = ["train", "preprocess", "avatar", "evaluate", "demo", "identity", "web", "telepresence", "export"]


class UserError(Exception):
    """An error caused by the user's input: printed as one readable message, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talking-heads",
        description="Few-shot adversarial talking-head models: train, create avatars, animate, evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"talking_heads.cli.{name}")
        except ModuleNotFoundError as err:  # a command group not built yet
            if err.name != f"talking_heads.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"talking-heads {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"talking-heads {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

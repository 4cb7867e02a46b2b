"""`talking-heads` command line. Subcommands only parse arguments and call the library.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its subcommands and sets
`func` (called with the parsed namespace; returns an exit code). The modules that build networks or read
footage (the pipeline, checkpoints, training, evaluation, preprocessing) are imported inside those functions,
so that `talking-heads --help` and argument errors do not wait for them. Options shared by several commands
and the pipeline they describe: `cli/common.py`.

Commands check their inputs with the library's own checks (`talking_heads.paths`, `talking_heads.limits`,
`talking_heads.config`, the checks of `driver.py` and `data/`), called before any slow work, and leave the
printing of every error to the policy below; they re-implement none of them.

One error policy for every command (`talking_heads.errors`): an input error (`InputError`, any module's
error class, a refused value or path) or an OSError (permission denied, disk full, ...) prints one line,
`talking-heads COMMAND: error: MESSAGE`, and exits 2; any other exception is an internal error: one line
plus "run with -v for the traceback", exit 1 (`-v` prints it). Ctrl-C exits 130, SIGTERM 143 (temporary
files are removed first; training checkpoints before it stops). Argument errors (argparse) exit 2.
`verify` has its own documented codes (cli/avatar.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback

from .. import limits
from ..errors import InputError, Terminated

COMMAND_MODULES = ["train", "bench", "preprocess", "avatar", "evaluate", "demo", "identity", "web", "telepresence",
                   "export", "export_model", "speech"]


class UserError(InputError):
    """An error caused by the user's input: printed as one readable message, exit code 2."""


EXIT_INPUT = 2  # bad input, refused value or path, OS error naming a path
EXIT_INTERNAL = 1  # a bug: one line, `-v` for the traceback


class Parser(argparse.ArgumentParser):
    """argparse with the policy's one-line errors (argparse prints the whole usage first), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="talking-heads",
        description="Few-shot adversarial talking-head models: train, create avatars, animate, evaluate.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks of internal errors")
    parser.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=VALUE",
                        help="raise (or lower) a safety limit, e.g. --limit duration=7200 (repeatable; the names "
                             "and defaults: talking_heads/limits.py, and each refusal names its limit)")
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
    name = " ".join(str(getattr(args, k)) for k in ("command", "avatar_command", "userstudy_command")
                    if getattr(args, k, None))
    with _sigterm_raises():
        return run_command(args, name)


def run_command(args: argparse.Namespace, name: str) -> int:
    """args.func(args) under the error policy (module docstring)."""
    def error(message: str, code: int) -> int:
        print(f"talking-heads {name}: error: {message}", file=sys.stderr)
        return code

    try:
        with limits.overrides(args.limits):
            return int(args.func(args) or 0)
    except InputError as err:
        return error(_one_line(err), EXIT_INPUT)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        return error(f"{where}{err.strerror or err}", EXIT_INPUT)
    except KeyboardInterrupt:
        print(f"talking-heads {name}: interrupted", file=sys.stderr)
        return 130
    except Terminated as err:
        print(f"talking-heads {name}: terminated", file=sys.stderr)
        return 128 + err.signum
    except Exception as err:  # noqa: BLE001 - the policy: internal errors are one line (traceback with -v)
        from ..train.signals import StoppedBySignal  # torch: loaded only when a command has failed

        if isinstance(err, StoppedBySignal):
            print(f"talking-heads {name}: {err}", file=sys.stderr)
            return 128 + err.signum
        if args.verbose:
            traceback.print_exc()
        return error(f"internal error: {type(err).__name__}: {_one_line(err)} (a bug; run with -v for the "
                     "traceback)", EXIT_INTERNAL)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


class _sigterm_raises:
    """In the main thread, SIGTERM raises `Terminated` (so `finally` blocks remove temporary files)."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise Terminated(signum)

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

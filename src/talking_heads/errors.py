"""The project's error policy (one for the library, the CLI, the web app and the tests).

- `InputError` (a ValueError): the input is wrong: a file that is not what it should be, a value out of range,
  an output path that cannot be written. Its message names the file or value, says what was expected and how
  to fix it. Every module's own error class (CheckpointError, VideoError, DriverError, ...) derives from it.
  The CLI prints `talking-heads COMMAND: error: MESSAGE` (one line) and exits 2.
- Anything else escaping a command is an internal error (a bug): the CLI prints one line plus
  "run with -v for the traceback" and exits 1 (`-v` prints the traceback).
- `OSError` from the operating system (permission denied, disk full, read-only file system) is reported
  like an input error, with the path the system named: exit 2.
- Interrupted: Ctrl-C exits 130, SIGTERM 143, after temporary files are removed (training first writes a
  checkpoint: `train.meta`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a file, a value, a path); the message says what is wrong and what to do."""


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so `finally` blocks remove temporary files."""

    def __init__(self, signum: int = 15):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


__all__ = ["InputError", "Terminated"]

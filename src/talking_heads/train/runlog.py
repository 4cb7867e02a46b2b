"""RUN/log.jsonl of a meta-learning run, and the guard against non-finite losses.

A step's losses stay on the device as 0-dim tensors (`steps.GanStep`): reading one back makes the host wait
for the device. The loop hands each step's logs to `RunLog.add`; they cross to the host at `check`, all steps
since the last check in one transfer, which the loop calls for every log line and before every checkpoint.
So a non-finite loss at any step stops the run (FloatingPointError naming that step) before a checkpoint
could store the weights it updated.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from .steps import Logs, to_floats


class RunLog:
    """The log file (written by rank 0, `is_main`), the losses of the steps since the last check, and the
    wall time between log lines. A context manager: the file is open inside it."""

    def __init__(self, path: Path, is_main: bool, start: int):
        self.path, self.is_main = Path(path), is_main
        self.pending: list[tuple[int, Logs]] = []
        self.t0, self.last_step = time.perf_counter(), start
        self._file = None

    def __enter__(self) -> "RunLog":
        if self.is_main:
            self._file = open(self.path, "a")
        return self

    def __exit__(self, *exc) -> bool:
        if self._file is not None:
            self._file.close()
            self._file = None
        return False

    def add(self, step: int, logs: Logs) -> None:
        self.pending.append((step, logs))

    def check(self) -> dict[str, float]:
        """The latest step's logs as floats, after checking every step since the last check; FloatingPointError
        at the first step with a non-finite value."""
        pending, self.pending = self.pending, []
        rows = to_floats([logs for _, logs in pending])
        for (step, _), row in zip(pending, rows):
            if not all(math.isfinite(v) for v in row.values()):
                raise FloatingPointError(f"non-finite loss at step {step}: {row}")
        return rows[-1] if rows else {}

    def seconds_per_step(self, step: int) -> float:
        """Wall time per step since the previous call (or the start), measured now."""
        now = time.perf_counter()
        seconds = (now - self.t0) / (step - self.last_step)
        self.t0, self.last_step = now, step
        return seconds

    def write(self, record: dict[str, Any]) -> None:
        """One JSON line (rank 0 only), flushed."""
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

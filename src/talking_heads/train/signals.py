"""Stopping a training run cleanly: the first SIGTERM or Ctrl-C (SIGINT) finishes the current step,
checkpoints and stops (`StoppedBySignal`; the CLI exits 128 + the signal's number); a second one stops at once
(the last checkpoint stays). Under torchrun a signal on any rank stops every rank at the same step (the loop
shares `signum` with the other ranks once per step, `dist.any_true_each`)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from ..errors import Terminated

log = logging.getLogger(__name__)


class StoppedBySignal(Exception):
    """Training stopped cleanly on SIGTERM / SIGINT after writing a checkpoint at `step`; run again to resume."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.signum, self.step, self.run_dir = int(signum), int(step), Path(run_dir)
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}: checkpointed in {run_dir}; "
                         "run the same command to resume")


class StopSignals:
    """SIGTERM / SIGINT handlers for the training loop (main thread only): the first signal sets `signum`
    (the loop checkpoints and stops), a second one restores the previous handlers and stops at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            log.warning("%s: finishing this step, writing a checkpoint and stopping (send it again to stop at once)",
                        signal.Signals(signum).name)
            return
        self._restore()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def _restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def __exit__(self, *exc):
        self._restore()
        return False

    def adopt(self) -> None:
        """Take another rank's signal as this rank's SIGTERM, so that it stops the same way."""
        if self.signum is None:
            self.signum = int(signal.SIGTERM)

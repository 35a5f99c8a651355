"""Stop gracefully: on SIGTERM, SIGINT, SIGUSR1 or SIGUSR2, finish the segment, checkpoint, then exit.

Clusters send these before they take a job away: SLURM sends SIGTERM on `scontrol requeue`, at a time
limit and on preemption, and the signal that `#SBATCH --signal` names (submitit: SIGUSR2) ahead of a
time limit. Inside `graceful_stop()` such a signal only sets a flag; the training loop looks at it at
the end of every segment (sweeper.train.engine), checkpoints every run still training at the step it
reached, records it `interrupted`, and raises `Interrupted`. A second signal stops at once. A handler
that was installed before (submitit's, which requeues the job) is called after the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)

_requested: int | None = None
_previous: dict[int, Any] = {}
_depth = 0


class Interrupted(BaseException):
    """Training stopped at a signal, after checkpointing. Not an `Exception`: a sweep job must not
    record it as a crash, and Hydra must not go on to the next job."""

    def __init__(self, signum: int):
        self.signum = signum
        self.resume_hint = "run the same command again to continue"  # set where the run's folder is known
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def requested() -> int | None:
    """The signal that asked training to stop, or None."""
    return _requested


def _handle(signum: int, frame: Any) -> None:
    global _requested
    if _requested is not None:  # asked twice: stop now, without a checkpoint
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    _requested = signum
    log.warning(
        "%s received: stopping after the current segment, with a checkpoint (send it again to stop now)",
        signal.Signals(signum).name,
    )


@contextlib.contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block the signals above stop training gracefully (main thread only; nests)."""
    global _depth, _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    if _depth == 1:
        _requested = None
        for signum in SIGNALS:
            _previous[signum] = signal.signal(signum, _handle)
    try:
        yield
    except Interrupted as stopped:
        if _depth == 1:
            previous = _previous.get(stopped.signum)
            _restore()
            # e.g. submitit's: requeue the job now that its checkpoint is written; not Python's own
            # SIGINT handler, which would only turn our Interrupted into a KeyboardInterrupt
            if callable(previous) and previous is not signal.default_int_handler:
                previous(stopped.signum, None)
        raise
    finally:
        _depth -= 1
        if _depth == 0:
            _restore()
            _requested = None


def _restore() -> None:
    for signum, handler in list(_previous.items()):
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()


def check() -> None:
    """Raise `Interrupted` if a stop was asked for (between jobs: do not start another)."""
    if _requested is not None:
        raise Interrupted(_requested)

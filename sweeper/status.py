"""How a run ended (metrics.json `status`), as one type. No JAX: the sweep summary reads it too."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    """A run's status. OK, DIVERGED and PRUNED are results: a rerun of the sweep skips them."""

    OK = "ok"  # trained to max_steps
    DIVERGED = "diverged"  # its loss stopped being finite: a result, with objective 0
    PRUNED = "pruned"  # stopped early by successive halving or an Optuna pruner, with its metrics then
    CRASHED = "crashed"  # raised an error: recorded, retried by a rerun
    INTERRUPTED = "interrupted"  # stopped by a signal after a checkpoint: a rerun resumes it
    # Only in the summary, for job folders without a metrics.json:
    RUNNING = "running"  # a process holds its lock (sweeper.sweep.locks) now
    UNFINISHED = "unfinished"  # started (it has checkpoints or events), killed before it could record
    NOT_STARTED = "not started"  # its folder and config exist, nothing else yet

    def __str__(self) -> str:
        return self.value

    @property
    def is_result(self) -> bool:
        """Whether the run reached a result a sweep keeps (a rerun skips it)."""
        return self in (Status.OK, Status.DIVERGED, Status.PRUNED)

    @property
    def failed(self) -> bool:
        """Whether the run has no accuracies to show (its objective is 0)."""
        return self in (Status.DIVERGED, Status.CRASHED)

"""Controllers: what may happen to runs while they train, plugged into the engine (sweeper.engine).

Each acts at the end of a segment on the members that reached that step, in every program of the
engine, so that a decision ranks all of them whatever program (width) they train in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from sweeper.engine import Controller, Engine
from sweeper.status import Status

log = logging.getLogger(__name__)


def default_rungs(max_steps: int, keep: float) -> tuple[int, ...]:
    """Two rungs spaced as successive halving spaces them: at max_steps * keep**2 and max_steps * keep."""
    return tuple(sorted({round(max_steps * keep**i) for i in (2, 1)} - {0, max_steps}))


@dataclass(frozen=True)
class Halving(Controller):
    """Successive halving: at each step in `rungs`, the best `keep` fraction of the members still
    training (by validation accuracy, across all programs) go on; the others end `pruned`."""

    rungs: tuple[int, ...]
    keep: float

    def survivors(self, candidates: int) -> int:
        return max(1, math.ceil(self.keep * candidates))

    def stops(self, max_steps: int) -> set[int]:
        return {r for r in self.rungs if 0 < r < max_steps}

    def checkpoint_at(self, step: int) -> bool:
        return step in self.rungs  # survivors too: a resumed sweep must not cut them again

    def act(self, engine: Engine, step: int) -> None:
        if step not in self.rungs:
            return
        candidates = engine.members_at(step)
        if len(candidates) < 2:
            return
        val = np.asarray([program.val_accuracies()[row] for program, row in candidates])
        order = np.argsort(-val, kind="stable")
        keep = self.survivors(len(candidates))
        pruned = [candidates[i] for i in sorted(order[keep:])]
        for i in order[keep:]:
            program, row = candidates[i]
            program.members[row].record.log.info(
                "pruned at step %d: val accuracy %.4f is not in the best %d of %d",
                step,
                val[i],
                keep,
                len(candidates),
            )
        log.info("rung at step %d: %d of %d jobs go on, %d pruned", step, keep, len(candidates), len(pruned))
        engine.end_members(pruned, Status.PRUNED)

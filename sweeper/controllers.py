"""Controllers: what may happen to runs while they train, plugged into the engine (sweeper.engine).

Each acts at the end of a segment on the members that reached that step, in every program of the
engine, so that a decision ranks all of them whatever program (width) they train in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from sweeper.config import ConfigError
from sweeper.engine import Controller, Engine
from sweeper.program import Program
from sweeper.status import Status

log = logging.getLogger(__name__)


def default_rungs(max_steps: int, keep: float) -> tuple[int, ...]:
    """Two rungs spaced as successive halving spaces them: at max_steps * keep**2 and max_steps * keep."""
    return tuple(sorted({round(max_steps * keep**i) for i in (2, 1)} - {0, max_steps}))


class ScheduleReplay(Controller):
    """Members whose history changes lr or reg during training (a `schedule=...` replay, a resumed
    population member) switch to the new values at those steps. First among the controllers, so that
    the others see the values members train with from that step on."""

    def __init__(self) -> None:
        self.change_steps: set[int] = set()

    def start(self, programs: list[Program]) -> None:
        self.change_steps = set().union(*(m.history.change_steps() for p in programs for m in p.members))

    def stops(self, max_steps: int) -> set[int]:
        return self.change_steps

    def act(self, engine: Engine, step: int) -> None:
        if step in self.change_steps:
            for program in {id(p): p for p, _ in engine.members_at(step)}.values():
                program.follow_histories()


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

    def start(self, programs: list) -> None:
        if rungs := sorted(self.stops(programs[0].members[0].cfg.max_steps)):
            log.info("successive halving at steps %s keeping %g", rungs, self.keep)

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


@dataclass(frozen=True)
class PopulationBasedTraining(Controller):
    """Population-based training inside one fused program (Jaderberg et al., 2017, truncation selection).

    Every `interval` steps the members are ranked by validation accuracy; each of the worst `quantile`
    copies the parameters and optimizer state of a member of the best `quantile` (a gather on the
    member axis, no files) and trains on with that member's lr and reg, each multiplied by one of
    `factors` drawn at random. A member whose loss stops being finite is replaced the same way at once
    instead of ending `diverged`. Each member's `schedule` (lr and reg from each step on, along its
    ancestry) and `lineage` (which member it copied, when) go into its checkpoints and metrics.json; a
    member's schedule replayed as a single run (`schedule=...`, same seed) retraces it. Random choices
    come from (`seed`, step), so a resumed population decides as the uninterrupted one did.
    """

    interval: int
    quantile: float
    factors: tuple[float, ...]
    seed: int
    one_program = True

    def start(self, programs: list) -> None:
        """Check the population and give fresh members their initial schedule and lineage."""
        members = [m for p in programs for m in p.members]
        if len(programs) != 1:
            raise ConfigError(
                "population-based training copies members into each other inside one program: give the "
                "population one width (or hydra.launcher.hidden=pad) and max_batch >= its size"
            )
        if len({m.cfg.seed for m in members}) > 1:
            raise ConfigError(
                "population-based training needs one seed for the whole population (sweep lr and reg)"
            )
        if any(m.history.lineage is None for m in members):
            raise ValueError("population members are made with new_member(..., population=True)")

    def stops(self, max_steps: int) -> set[int]:
        return set(range(self.interval, max_steps, self.interval))

    def checkpoint_at(self, step: int) -> bool:
        return step % self.interval == 0  # after the exploit: a resumed population must not redo it

    def rescue(self, engine: Engine, step: int, diverged: list[tuple]) -> list[tuple]:
        if diverged:
            program = diverged[0][0]
            self._exploit(program, step, [row for _, row in diverged], reason="diverged")
        return []

    def act(self, engine: Engine, step: int) -> None:
        if step % self.interval or step >= engine.schedule.max_steps:
            return
        for program in {id(p): p for p, _ in engine.members_at(step)}.values():
            rows = [j for j, m in enumerate(program.members) if m.status is None]
            if len(rows) < 2:
                continue
            val = program.val_accuracies()[rows]
            count = max(1, int(self.quantile * len(rows)))
            order = [rows[i] for i in np.argsort(-val, kind="stable")]
            self._exploit(program, step, order[-count:], sources=order[:count], reason="exploit")

    def _exploit(self, program, step: int, targets: list[int], *, reason: str, sources=None) -> None:
        """Members `targets` copy a random one of `sources` (default: the best by val accuracy) and
        perturb its hyperparameters."""
        if sources is None:
            val = program.val_accuracies()
            sources = [j for j in np.argsort(-val, kind="stable") if j not in targets][:1]
        if not sources:
            return
        rng = np.random.default_rng([self.seed, step, len(targets)])
        copies = [int(sources[rng.integers(len(sources))]) for _ in targets]
        histories = []
        for target, source in zip(targets, copies, strict=True):
            dst, src = program.members[target], program.members[source]
            lr = src.lr * float(rng.choice(self.factors))
            reg = src.reg * float(rng.choice(self.factors))
            histories.append(src.history.copied(step, lr, reg, src.name, reason))
            dst.record.log.info(
                "step %d: copied %s (%s), now lr %.6g reg %.6g", step, src.name, reason, lr, reg
            )
        program.copy_members(targets, copies, histories)
        log.info("step %d: %d member(s) copied the best (%s)", step, len(targets), reason)

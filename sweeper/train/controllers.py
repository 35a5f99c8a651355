"""Controllers: what may happen to runs while they train, plugged into the engine (sweeper.train.engine).

Each acts at the end of a segment on the members that reached that step, in every program of the
engine, so that a decision ranks all of them whatever program (width) they train in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeper.config import ConfigError
from sweeper.status import Status
from sweeper.train.engine import Controller, Engine
from sweeper.train.program import Program

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

    def admit(self, engine: Engine, members: list) -> None:
        self.change_steps |= set().union(*(m.history.change_steps() for m in members))

    def stops(self, max_steps: int) -> set[int]:
        return self.change_steps

    def act(self, engine: Engine, step: int) -> None:
        if not self.change_steps:
            return
        for program in {id(p): p for p, _ in engine.members_at(step)}.values():
            program.follow_histories()  # each member at its own step


class Rungs(Controller):
    """What both kinds of successive halving share: stops and checkpoints at `rungs` (survivors too: a
    resumed sweep must not judge them again), and the best `keep` fraction, rounded up, goes on."""

    rungs: tuple[int, ...]
    keep: float
    kind = "successive halving"

    def survivors(self, candidates: int) -> int:
        return max(1, math.ceil(self.keep * candidates))

    def stops(self, max_steps: int) -> set[int]:
        return {r for r in self.rungs if 0 < r < max_steps}

    def checkpoint_at(self, step: int) -> bool:
        return step in self.rungs

    def start(self, programs: list) -> None:
        if rungs := sorted(self.stops(programs[0].members[0].cfg.max_steps)):
            log.info("%s at steps %s keeping %g", self.kind, rungs, self.keep)


@dataclass(frozen=True)
class Halving(Rungs):
    """Successive halving: at each step in `rungs`, the best `keep` fraction of the members still
    training (by validation accuracy, across all programs) go on; the others end `pruned`."""

    rungs: tuple[int, ...]
    keep: float

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


@dataclass
class AsyncHalving(Rungs):
    """Asynchronous successive halving (Li et al., 2018, ASHA): a member that reaches a step in `rungs`
    goes on if its validation accuracy is in the best `keep` fraction (rounded up) of every member that
    has reached that rung so far, itself included, and ends `pruned` otherwise; no member waits for a rung
    to fill. Members that reach a rung at the same step are counted together. Each member at its own
    step, so it works in a slot pool. With `rung_file`, every result goes to that JSON-lines file as it
    comes (under a file lock) and is read back before each decision: a resumed sweep, and other
    processes on the same sweep folder, rank against all of them."""

    rungs: tuple[int, ...]
    keep: float
    rung_file: Path | None = None
    reached: dict[int, dict[str, float]] = field(default_factory=dict)  # rung: {job: val accuracy}
    kind = "asynchronous successive halving"

    def act(self, engine: Engine, step: int) -> None:
        arrivals: dict[int, list[tuple[Program, int]]] = {}
        for program, row in engine.members_at(step):
            own = program.member_step(row)
            if own in self.rungs:
                arrivals.setdefault(own, []).append((program, row))
        pruned = []
        for rung, members in arrivals.items():
            values = {p.members[r].name: float(p.val_accuracies()[r]) for p, r in members}
            seen = self._record(rung, values)
            keep = self.survivors(len(seen))
            for program, row in members:
                value = values[program.members[row].name]
                rank = sum(v > value for v in seen.values())  # ties go on
                record = program.members[row].record
                if rank < keep:
                    record.log.info(
                        "rung at step %d: val accuracy %.4f is in the best %d of the %d that reached it: "
                        "goes on",
                        rung,
                        value,
                        keep,
                        len(seen),
                    )
                    continue
                record.log.info(
                    "pruned at step %d: val accuracy %.4f is not in the best %d of the %d that reached it",
                    rung,
                    value,
                    keep,
                    len(seen),
                )
                pruned.append((program, row))
        engine.end_members(pruned, Status.PRUNED)

    def _record(self, rung: int, values: dict[str, float]) -> dict[str, float]:
        """Every result at `rung` so far, with `values` added (and written to the rung file)."""
        if self.rung_file is None:
            self.reached.setdefault(rung, {}).update(values)
            return dict(self.reached[rung])
        self.rung_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.rung_file, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # read and append as one, across processes
            f.seek(0)
            seen: dict[str, float] = {}
            for line in f:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    entry = json.loads(line)
                    if int(entry["rung"]) == rung:
                        seen[str(entry["job"])] = float(entry["val_accuracy"])
            for job, value in values.items():
                f.write(json.dumps({"rung": rung, "job": job, "val_accuracy": value}) + "\n")
            seen.update(values)
        return seen


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

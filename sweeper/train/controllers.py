"""Controllers: what may happen to runs while they train, plugged into the engine (sweeper.train.engine).

Each decides at the end of a segment on the members that reached that step, in every program of the
engine, so that a decision ranks all of them whatever program (width) they train in; it returns its
decisions (sweeper.train.control) and the engine carries them out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeper.status import Status
from sweeper.train.control import Controller, CopyMembers, Decision, EndMembers, FollowHistories, Note, Row
from sweeper.train.program import Member, Program
from sweeper.train.rung_store import FileRungs, MemoryRungs, RungStore
from sweeper.train.schedule import Schedule

log = logging.getLogger(__name__)


def default_rungs(max_steps: int, keep: float) -> tuple[int, ...]:
    """Two rungs spaced as successive halving spaces them: at max_steps * keep**2 and max_steps * keep."""
    return tuple(sorted({round(max_steps * keep**i) for i in (2, 1)} - {0, max_steps}))


def programs_of(members: list[Row]) -> list[Program]:
    """The programs of `members`, each once, in order."""
    return list({id(p): p for p, _ in members}.values())


class ScheduleReplay(Controller):
    """Members whose history changes lr or reg during training (a `schedule=...` replay, a resumed
    population member) switch to the new values at those steps. First among the controllers, so that
    the others see the values members train with from that step on."""

    def __init__(self) -> None:
        self.change_steps: set[int] = set()

    def start(self, programs: list[Program]) -> None:
        self.change_steps = set().union(*(m.history.change_steps() for p in programs for m in p.members))

    def admit(self, members: list[Member]) -> None:
        self.change_steps |= set().union(*(m.history.change_steps() for m in members))

    def stops(self, max_steps: int) -> set[int]:
        return self.change_steps

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        if not self.change_steps:
            return ()
        return [FollowHistories(program) for program in programs_of(members)]  # each member at its own step


class Rungs(Controller):
    """What both kinds of successive halving share: stops and checkpoints at `rungs` (survivors too: a
    resumed sweep must not judge them again), and the best `keep` fraction, rounded up, goes on."""

    rungs: tuple[int, ...]
    keep: float
    kind = "successive halving"

    def survivors(self, candidates: int) -> int:
        """How many of `candidates` go on."""
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
    training (by their objective, sweeper.objective, across all programs) go on; the others end `pruned`."""

    rungs: tuple[int, ...]
    keep: float
    lockstep = True

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        if step not in self.rungs or len(members) < 2:
            return ()
        objective = members[0][0].objective
        values = np.asarray([program.objective_values()[row] for program, row in members])
        order = objective.ranking(values)
        keep = self.survivors(len(members))
        pruned = tuple(members[i] for i in sorted(order[keep:]))
        line = "pruned at step %d: %s %.4f is not in the best %d of %d"
        notes = [
            Note.to(members[i], line, step, objective.label, values[i], keep, len(members))
            for i in order[keep:]
        ]
        rung = Note.of(
            __name__, "rung at step %d: %d of %d jobs go on, %d pruned", step, keep, len(members), len(pruned)
        )
        return [*notes, rung, EndMembers(pruned, Status.PRUNED)]


@dataclass
class AsyncHalving(Rungs):
    """Asynchronous successive halving (Li et al., 2018, ASHA): a member that reaches a step in `rungs`
    goes on if its objective (sweeper.objective) is in the best `keep` fraction (rounded up) of every
    member that has reached that rung so far, itself included, and ends `pruned` otherwise; no member
    waits for a rung to fill. Members that reach a rung at the same step are counted together. Each member
    at its own step, so it works in a slot pool. The results go to a rung store
    (sweeper.train.rung_store): with `rung_file`, that JSON-lines file, written as they come (under a file
    lock) and read back before each decision, so that a resumed sweep, and other processes on the same
    sweep folder, rank against all of them; else memory.
    """

    rungs: tuple[int, ...]
    keep: float
    rung_file: Path | None = None
    store: RungStore = field(init=False, repr=False, compare=False)
    kind = "asynchronous successive halving"

    def __post_init__(self) -> None:
        self.store = MemoryRungs() if self.rung_file is None else FileRungs(self.rung_file)

    @property
    def reached(self) -> dict[int, dict[str, float]]:
        """Every result at the rungs so far: {rung: {job: objective value}}."""
        return self.store.reached

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        arrivals: dict[int, list[Row]] = {}
        for program, row in members:
            own = program.member_step(row)
            if own in self.rungs:
                arrivals.setdefault(own, []).append((program, row))
        decisions: list[Decision] = []
        pruned = []
        for rung, arrived in arrivals.items():
            values = {p.members[r].name: float(p.objective_values()[r]) for p, r in arrived}
            seen = self.store.record(rung, values)
            keep = self.survivors(len(seen))
            for program, row in arrived:
                value, objective = values[program.members[row].name], program.objective
                rank = sum(objective.better(v, value) for v in seen.values())  # ties go on
                verdict = "goes on" if rank < keep else "pruned"
                line = (rung, objective.label, value, keep, len(seen))
                decisions.append(Note.to((program, row), RUNG_LINES[verdict], *line))
                if rank >= keep:
                    pruned.append((program, row))
        return [*decisions, EndMembers(tuple(pruned), Status.PRUNED)]


RUNG_LINES = {  # what asynchronous halving writes into a member's log at a rung
    "goes on": "rung at step %d: %s %.4f is in the best %d of the %d that reached it: goes on",
    "pruned": "pruned at step %d: %s %.4f is not in the best %d of the %d that reached it",
}


@dataclass(frozen=True)
class PopulationBasedTraining(Controller):
    """Population-based training inside one fused program (Jaderberg et al., 2017, truncation selection).

    Every `interval` steps the members are ranked by their objective (sweeper.objective); each of the
    worst `quantile` copies the parameters and optimizer state of a member of the best `quantile` (a
    gather on the member axis, no files) and trains on with that member's lr and reg, each multiplied by
    one of `factors` drawn at random. A member whose loss stops being finite is replaced the same way at
    once instead of ending `diverged`. Each member's `schedule` (lr and reg from each step on, along its
    ancestry) and `lineage` (which member it copied, when) go into its checkpoints and metrics.json; a
    member's schedule replayed as a single run (`schedule=...`, same seed) retraces it. Random choices
    come from (`seed`, step), so a resumed population decides as the uninterrupted one did.
    """

    interval: int
    quantile: float
    factors: tuple[float, ...]
    seed: int
    perturb: tuple[str, ...] = ("lr", "reg")  # what it perturbs: lr, reg, optimizer.<numeric key>
    lockstep = True
    one_program = True

    def start(self, programs: list) -> None:
        """Check that the population is one program of members that record their lineage (the plan
        refused what cannot train so: sweeper.train.plan.Search)."""
        members = [m for p in programs for m in p.members]
        if len(programs) != 1:  # the plan keeps a population in one program (sweeper.train.plan)
            raise ValueError("a population trains in one program")
        if any(m.history.lineage is None for m in members):
            raise ValueError("population members are made with new_member(..., population=True)")

    def stops(self, max_steps: int) -> set[int]:
        return set(range(self.interval, max_steps, self.interval))

    def checkpoint_at(self, step: int) -> bool:
        return step % self.interval == 0  # after the exploit: a resumed population must not redo it

    def rescue(self, step: int, diverged: list[Row]) -> tuple[list[Row], Sequence[Decision]]:
        if not diverged:
            return [], ()
        program = diverged[0][0]
        return [], self._exploit(program, step, [row for _, row in diverged], reason="diverged")

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        if step % self.interval or step >= schedule.max_steps:
            return ()
        decisions: list[Decision] = []
        for program in programs_of(members):
            rows = [j for j, m in enumerate(program.members) if m.status is None]
            if len(rows) < 2:
                continue
            values = program.objective_values()[rows]
            count = max(1, int(self.quantile * len(rows)))
            order = [rows[i] for i in program.objective.ranking(values)]
            decisions += self._exploit(program, step, order[-count:], sources=order[:count], reason="exploit")
        return decisions

    def _exploit(
        self, program: Program, step: int, targets: list[int], *, reason: str, sources: list | None = None
    ) -> list[Decision]:
        """Members `targets` copy a random one of `sources` (default: the best by the objective) and
        perturb its hyperparameters."""
        if sources is None:
            ranked = program.objective.ranking(program.objective_values())
            sources = [j for j in ranked if j not in targets][:1]
        if not sources:
            return []
        rng = np.random.default_rng([self.seed, step, len(targets)])
        copies = [int(sources[rng.integers(len(sources))]) for _ in targets]
        histories, notes = [], []
        for target, source in zip(targets, copies, strict=True):
            src = program.members[source]
            values = src.values.scaled({key: float(rng.choice(self.factors)) for key in self.perturb})
            histories.append(src.history.copied(step, values, src.name, reason))
            shown = " ".join(f"{key} {value:.6g}" for key, value in values.as_dict().items())
            notes.append(
                Note.to((program, target), "step %d: copied %s (%s), now %s", step, src.name, reason, shown)
            )
        copy = CopyMembers(program, tuple(targets), tuple(copies), tuple(histories))
        done = Note.of(__name__, "step %d: %d member(s) copied the best (%s)", step, len(targets), reason)
        return [*notes, copy, done]

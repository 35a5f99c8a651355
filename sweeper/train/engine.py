"""When things happen to runs: the schedule, and the loop that keeps it for any number of programs.

    Engine(programs, Schedule.of(cfg), controllers=[...]).run()

A single run is one unstacked program; a fused group is one or more stacked programs driven in
lockstep (sweeper.train.program). For each segment end (a log point, a checkpoint, a controller's step,
max_steps), in this order:

1. each program at a log point measures validation accuracy and writes histograms, trains to the
   segment end in one compiled scan, then writes its log point's scalars and lines;
2. members whose loss stopped being finite end `diverged`;
3. controllers act on the members at that step, in their order: a replayed schedule changes lr and
   reg, successive halving and Optuna pruners end members `pruned`, population-based training copies
   and perturbs members (sweeper.train.controllers, sweeper.train.pruning);
4. checkpoints are written where the schedule or a controller asks;
5. at max_steps every remaining member ends `ok`; ended members leave their program;
6. a stop signal (SIGTERM, ...) checkpoints every member still training, records it `interrupted`
   and raises `signals.Interrupted`.

Each member's record (sweeper.record.run) receives its lines, events, checkpoints and metrics.json; the
engine only says when.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sweeper import signals
from sweeper.record.run import Clock
from sweeper.status import Status
from sweeper.train.program import Member, Program

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """The steps of a run of `max_steps` at which the loop stops: log points, checkpoints, and `extra`
    steps that controllers ask for. One compiled scan runs the steps between two stops."""

    max_steps: int
    log_every: int
    checkpoint_every: int
    extra: frozenset[int] = frozenset()

    @classmethod
    def of(cls, cfg: Any) -> Schedule:
        return cls(cfg.max_steps, cfg.log_every, cfg.checkpoint_every)

    def next_stop(self, after: int) -> int | None:
        """The first stop later than step `after`, None from max_steps on."""
        if after >= self.max_steps:
            return None
        following = [self.max_steps, *(s for s in self.extra if after < s < self.max_steps)]
        following += [(after // every + 1) * every for every in (self.log_every, self.checkpoint_every)]
        return min(following)

    def is_log_point(self, step: int) -> bool:
        return step % self.log_every == 0 and step < self.max_steps

    def is_checkpoint(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.max_steps


class Controller:
    """Something that acts on members during training. Subclasses override what they need."""

    one_program = False  # whether its members must share one program (then they resume from one step)

    def start(self, programs: list[Program]) -> None:
        """Check and prepare the members before training (raise ConfigError to refuse them)."""

    def stops(self, max_steps: int) -> set[int]:
        """Steps at which the loop must stop for this controller."""
        return set()

    def checkpoint_at(self, step: int) -> bool:
        """Whether members still training get a checkpoint at their step `step` (after `act`)."""
        return False

    def admit(self, engine: Engine, members: list[Member]) -> None:
        """Members join a program while the others train (a slot pool); prepare them as `start` did."""

    def rescue(
        self, engine: Engine, step: int, diverged: list[tuple[Program, int]]
    ) -> list[tuple[Program, int]]:
        """Given the (program, row) members whose loss stopped being finite, return those that should
        end `diverged` (the others were dealt with)."""
        return diverged

    def act(self, engine: Engine, step: int) -> None:
        """Act on the members at `step` (engine.members_at(step)), after their segment."""


def show_progress(cfg: Any) -> bool:
    """Whether to draw a progress bar: `cfg.progress`, or when unset, whether stderr is a terminal."""
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


class Engine:
    """Drives `programs` through `schedule`, writes each member's record, ends each member once.

    `clock` dates the members' cost (sweeper.record.run.Clock); `on_end(member)` is called when a member's
    record is complete. With `refill(free)`, a program whose members end at a step takes up to `free`
    new members from it there (a slot pool); each member keeps its own step (sweeper.train.program).
    """

    def __init__(
        self,
        programs: list[Program],
        schedule: Schedule,
        *,
        controllers: Iterable[Controller] = (),
        clock: Clock | None = None,
        on_end: Callable[[Member], None] | None = None,
        refill: Callable[[int], list[Member]] | None = None,
    ):
        self.programs, self.controllers = programs, list(controllers)
        for controller in self.controllers:
            controller.start(programs)
        self.schedule = schedule
        self._update_schedule()
        self.members = [m for p in programs for m in p.members]
        self.clock = clock or Clock(time.perf_counter(), 0.0, len(self.members))
        self.on_end, self.refill = on_end, refill
        self.histograms = bool(self.members[0].cfg.histograms)
        self.progress = any(show_progress(m.cfg) for m in self.members)

    def _update_schedule(self) -> None:
        """The schedule with every controller's stops (members' own steps)."""
        stops = set().union(*(c.stops(self.schedule.max_steps) for c in self.controllers))
        s = self.schedule
        self.schedule = Schedule(s.max_steps, s.log_every, s.checkpoint_every, frozenset(stops))

    def run(self) -> list[Member]:
        """Train every member to its end; return them all."""
        start = min(p.step for p in self.programs)
        total = self.schedule.max_steps if self.refill is None else None  # a pool runs past max_steps
        bar = tqdm(total=total, initial=start, unit="step", disable=not self.progress, leave=False)
        with logging_redirect_tqdm(), bar:
            while (stop := self._next_stop()) is not None:
                for program in self.programs:
                    if program.members and program.step < stop:
                        self._advance(program, stop)
                bar.update(stop - bar.n)
                self._segment_end(stop)
        for program in self.programs:  # resumed from a checkpoint at max_steps: only the record is missing
            self.end(program, program.training_rows(), Status.OK)
        return self.members

    def _next_stop(self) -> int | None:
        """The first program step at which a member still training reaches a stop of its own."""
        following = []
        for program in self.programs:
            for row in program.training_rows():
                own = self.schedule.next_stop(program.member_step(row))
                if own is not None:
                    following.append(own + program.members[row].offset)
        return min(following, default=None)

    def _advance(self, program: Program, stop: int) -> None:
        """Train `program` to `stop`, with the log points of the members at one."""
        at = program.step
        own = [program.member_step(j) for j in range(len(program))]
        rows = [j for j in range(len(program)) if self.schedule.is_log_point(own[j])]
        if not rows:
            program.train(stop)
            return
        val = program.val_accuracies()  # measured before this step's update, as the article does
        if self.histograms:
            tensors = program.histogram_tensors()
            for j in rows:
                program.members[j].record.histograms(own[j], tensors[j])
        losses, accuracies = program.train(stop)
        for j in rows:
            member = program.members[j]
            val_j = None if val is None else float(val[j])
            member.record.log_point(own[j], float(losses[0, j]), float(accuracies[0, j]), val_j)
            if member.history.schedule:
                member.record.schedule_point(own[j], member.lr, member.reg)
        if val is not None and program.stacked:
            best = int(np.argmax(val))
            where = f"step {at}" if len(set(own)) == 1 else f"program step {at}"
            log.info(
                "%s: %d jobs training, best val accuracy %.4f (%s)",
                where,
                len(program),
                val[best],
                program.members[best].name,
            )

    def _segment_end(self, stop: int) -> None:
        at_stop = [p for p in self.programs if p.members and p.step == stop]
        diverged = [
            (p, j) for p in at_stop for j, m in enumerate(p.members) if not np.isfinite(m.last_losses).all()
        ]
        for controller in self.controllers:
            diverged = controller.rescue(self, stop, diverged)
        for program, j in diverged:
            own = program.member_step(j)
            program.members[j].record.log.warning("loss is not finite by step %d: status diverged", own)
        self.end_members(diverged, Status.DIVERGED)
        for controller in self.controllers:
            controller.act(self, stop)
        for program in at_stop:
            self._checkpoint(
                program, [j for j in program.training_rows() if self._checkpoint_due(program, j)]
            )
            self._end_finished(program)
        if signals.requested() is not None:
            self._interrupt()
        for program in at_stop:
            program.keep(program.training_rows())
            if self.refill is not None:
                self._refill(program)

    def _checkpoint_due(self, program: Program, row: int) -> bool:
        own = program.member_step(row)
        return self.schedule.is_checkpoint(own) or any(c.checkpoint_at(own) for c in self.controllers)

    def _end_finished(self, program: Program) -> None:
        """End `ok` the members of `program` that reached max_steps."""
        done = [j for j in program.training_rows() if program.member_step(j) >= self.schedule.max_steps]
        self.end(program, done, Status.OK)

    def _refill(self, program: Program) -> None:
        """New members take the free slots of `program`, at its step, each from its own start."""
        while (free := program.slots - len(program)) > 0 and (new := self.refill(free)):
            program.add(new)
            self.members += new
            for controller in self.controllers:
                controller.admit(self, new)
            self._update_schedule()
            self._end_finished(program)  # resumed from a checkpoint at max_steps
            program.keep(program.training_rows())

    # --- what controllers use -----------------------------------------------------------------------

    def members_at(self, step: int) -> list[tuple[Program, int]]:
        """(program, row) of every member still training in the programs at program step `step` (each
        member at its own step: program.member_step(row))."""
        return [(p, j) for p in self.programs if p.step == step for j in p.training_rows()]

    def end_members(self, members: list[tuple[Program, int]], status: Status) -> None:
        """End these (program, row) members with `status`."""
        for program in {id(p): p for p, _ in members}.values():
            self.end(program, [j for p, j in members if p is program], status)

    def end(self, program: Program, rows: list[int], status: Status) -> None:
        """Evaluate (unless diverged) and close the records of `program`'s members at `rows`."""
        if not rows:
            return
        if status is Status.DIVERGED:  # its parameters are not finite: nothing to evaluate or keep
            evaluated = [None] * len(rows)
        else:
            self._checkpoint(program, rows)  # a member that ends early can go on alone later
            evaluated = program.final_accuracies(rows)
        for row, accuracies in zip(rows, evaluated, strict=True):
            member = program.members[row]
            cost = self.clock.cost(program, member)
            member.record.finish(status, program.member_step(row), member, accuracies, cost)
            if self.on_end is not None:
                self.on_end(member)

    def _checkpoint(self, program: Program, rows: list[int]) -> None:
        """Checkpoint the members at `rows` that have none at this step yet."""
        rows = [j for j in rows if program.members[j].record.saved_step != program.member_step(j)]
        if not rows:
            return
        mean_image = program.splits.train.mean_image
        for row, state in program.member_states(rows):
            member, own = program.members[row], program.member_step(row)
            attempt = self.clock.attempt(member.start, own)
            member.record.checkpoint(member, own, state, mean_image, attempt)

    def _interrupt(self) -> None:
        """Checkpoint and record every member still training as interrupted, then raise."""
        signum = signals.requested()
        for program in self.programs:
            rows = program.training_rows()
            self._checkpoint(program, rows)
            for j in rows:
                member = program.members[j]
                member.record.interrupted(program.member_step(j), signum, self.clock.cost(program, member))
        raise signals.Interrupted(signum)

"""When things happen to runs: the schedule, and the loop that keeps it for any number of programs.

    Engine(programs, Schedule.of(cfg), controllers=[...]).run()

A single run is one unstacked program; a fused group is one or more stacked programs driven in
lockstep (sweeper.program). For each segment end (a log point, a checkpoint, a controller's step,
max_steps), in this order:

1. each program at a log point measures validation accuracy and writes histograms, trains to the
   segment end in one compiled scan, then writes its log point's scalars and lines;
2. members whose loss stopped being finite end `diverged`;
3. controllers act on the members at that step, in their order: a replayed schedule changes lr and
   reg, successive halving and Optuna pruners end members `pruned`, population-based training copies
   and perturbs members (sweeper.controllers, sweeper.pruning);
4. checkpoints are written where the schedule or a controller asks;
5. at max_steps every remaining member ends `ok`; ended members leave their program;
6. a stop signal (SIGTERM, ...) checkpoints every member still training, records it `interrupted`
   and raises `signals.Interrupted`.

Each member's record (sweeper.record) receives its lines, events, checkpoints and metrics.json; the
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
from sweeper.program import Member, Program
from sweeper.record import Clock
from sweeper.status import Status

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

    def stops(self, after: int) -> list[int]:
        """Every stop later than step `after`, in order."""
        stops = {self.max_steps} | {s for s in self.extra if s < self.max_steps}
        stops |= set(range(self.log_every, self.max_steps, self.log_every))
        stops |= set(range(self.checkpoint_every, self.max_steps, self.checkpoint_every))
        return sorted(s for s in stops if s > after)

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
        """Whether members still training get a checkpoint at `step` (after `act`)."""
        return False

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

    `clock` dates the members' cost (sweeper.record.Clock); `on_end(member)` is called when a member's
    record is complete.
    """

    def __init__(
        self,
        programs: list[Program],
        schedule: Schedule,
        *,
        controllers: Iterable[Controller] = (),
        clock: Clock | None = None,
        on_end: Callable[[Member], None] | None = None,
    ):
        self.programs, self.controllers = programs, list(controllers)
        for controller in self.controllers:
            controller.start(programs)
        stops = set().union(*(c.stops(schedule.max_steps) for c in self.controllers))
        self.schedule = Schedule(
            schedule.max_steps, schedule.log_every, schedule.checkpoint_every, frozenset(stops)
        )
        members = [m for p in programs for m in p.members]
        self.clock = clock or Clock(time.perf_counter(), 0.0, len(members))
        self.on_end = on_end
        self.histograms = bool(members[0].cfg.histograms)
        self.progress = any(show_progress(m.cfg) for m in members)

    def run(self) -> list[Member]:
        """Train every member to its end; return them all."""
        members = [m for p in self.programs for m in p.members]
        start = min(p.step for p in self.programs)
        bar = tqdm(
            total=self.schedule.max_steps, initial=start, unit="step", disable=not self.progress, leave=False
        )
        with logging_redirect_tqdm(), bar:
            for stop in self.schedule.stops(after=start):
                for program in self.programs:
                    if program.members and program.step < stop:
                        self._advance(program, stop)
                bar.update(stop - bar.n)
                self._segment_end(stop)
                if not any(p.members for p in self.programs):
                    break
        for program in self.programs:  # resumed from a checkpoint at max_steps: only the record is missing
            self.end(program, program.training_rows(), Status.OK)
        return members

    def _advance(self, program: Program, stop: int) -> None:
        """Train `program` to `stop`, with the log point at its current step if it is one."""
        at = program.step
        if not self.schedule.is_log_point(at):
            program.train(stop)
            return
        val = program.val_accuracies()  # measured before this step's update, as the article does
        if self.histograms:
            for member, tensors in zip(program.members, program.histogram_tensors(), strict=True):
                member.record.histograms(at, tensors)
        losses, accuracies = program.train(stop)
        for j, member in enumerate(program.members):
            val_j = None if val is None else float(val[j])
            member.record.log_point(at, float(losses[0, j]), float(accuracies[0, j]), val_j)
            if member.history.schedule:
                member.record.schedule_point(at, member.lr, member.reg)
        if val is not None and program.stacked:
            best = int(np.argmax(val))
            log.info(
                "step %d: %d jobs training, best val accuracy %.4f (%s)",
                at,
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
            program.members[j].record.log.warning("loss is not finite by step %d: status diverged", stop)
        self.end_members(diverged, Status.DIVERGED)
        for controller in self.controllers:
            controller.act(self, stop)
        if self.schedule.is_checkpoint(stop) or any(c.checkpoint_at(stop) for c in self.controllers):
            for program in at_stop:
                self._checkpoint(program, program.training_rows())
        if stop == self.schedule.max_steps:
            for program in at_stop:
                self.end(program, program.training_rows(), Status.OK)
        if signals.requested() is not None:
            self._interrupt()
        for program in at_stop:
            program.keep(program.training_rows())

    # --- what controllers use -----------------------------------------------------------------------

    def members_at(self, step: int) -> list[tuple[Program, int]]:
        """(program, row) of every member still training that has reached `step`."""
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
            member.record.finish(status, program.step, member, accuracies, self.clock.cost(program, member))
            if self.on_end is not None:
                self.on_end(member)

    def _checkpoint(self, program: Program, rows: list[int]) -> None:
        """Checkpoint the members at `rows` that have none at this step yet."""
        rows = [j for j in rows if program.members[j].record.saved_step != program.step]
        if not rows:
            return
        mean_image = program.splits.train.mean_image
        for row, state in program.member_states(rows):
            member = program.members[row]
            attempt = self.clock.attempt(member.start, program.step)
            member.record.checkpoint(member, program.step, state, mean_image, attempt)

    def _interrupt(self) -> None:
        """Checkpoint and record every member still training as interrupted, then raise."""
        signum = signals.requested()
        for program in self.programs:
            rows = program.training_rows()
            self._checkpoint(program, rows)
            for j in rows:
                member = program.members[j]
                member.record.interrupted(program.step, signum, self.clock.cost(program, member))
        raise signals.Interrupted(signum)

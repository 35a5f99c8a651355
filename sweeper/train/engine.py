"""When things happen to runs: the loop that keeps a schedule (sweeper.train.schedule) for any number of
programs.

    Engine(programs, Schedule.of(cfg), controllers=[...]).run()

A single run is one unstacked program; a fused group is one or more stacked programs driven in
lockstep (sweeper.train.program). For each segment end (a log point, a checkpoint, a controller's step,
max_steps), in this order:

1. each program at a log point measures validation accuracy and loss (and its objective) and
   writes histograms, trains to the
   segment end in one compiled scan, then writes its log point's scalars and lines;
2. members whose loss stopped being finite end `diverged`, unless a controller rescues them;
3. controllers decide on the members at that step, in their order, and the engine carries out each
   one's decisions (sweeper.train.control) before asking the next: a replayed schedule changes lr and
   reg, successive halving and Optuna pruners end members `pruned`, population-based training copies
   and perturbs members (sweeper.train.controllers, sweeper.train.pruning);
4. checkpoints are written where the schedule or a controller asks;
5. at max_steps every remaining member ends `ok`; ended members leave their program;
6. a stop signal (SIGTERM, ...) checkpoints every member still training, records it `interrupted`
   and raises `signals.Interrupted`.

Each member's record (sweeper.record.run) receives its lines, events, checkpoints and metrics.json
through sweeper.train.recorder; the engine only says when.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sweeper import signals
from sweeper.record.run import Clock
from sweeper.status import Status
from sweeper.train.control import Controller, CopyMembers, Decision, EndMembers, FollowHistories, Note, Row
from sweeper.train.program import Member, Program
from sweeper.train.recorder import Recorder
from sweeper.train.schedule import Schedule

__all__ = ["Controller", "Engine", "Schedule", "show_progress"]


def show_progress(cfg: Any) -> bool:
    """Whether to draw a progress bar: `cfg.progress`, or when unset, whether stderr is a terminal."""
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


class Engine:
    """Drives `programs` through `schedule`, has each member's record written, ends each member once.

    `clock` dates the members' cost (sweeper.record.run.Clock); `on_end(member)` is called when a member's
    record is complete. With `refill(step)` (a slot pool, sweeper.train.pool), the rows freed at a step
    are taken there: it returns (program, new members) for each program new members joined, new
    programs among them, until it returns none; each member keeps its own step (sweeper.train.program),
    and a program whose members all ended leaves.
    """

    def __init__(
        self,
        programs: list[Program],
        schedule: Schedule,
        *,
        controllers: Iterable[Controller] = (),
        clock: Clock | None = None,
        on_end: Callable[[Member], None] | None = None,
        refill: Callable[[int], list[tuple[Program, list[Member]]]] | None = None,
    ):
        self.programs, self.controllers = programs, list(controllers)
        for controller in self.controllers:
            controller.start(programs)
        self.schedule = schedule
        self._update_schedule()
        self.members = [m for p in programs for m in p.members]
        clock = clock or Clock(time.perf_counter(), 0.0, len(self.members))
        self.recorder, self.refill = Recorder(clock, on_end), refill
        self.histograms = bool(self.members[0].cfg.histograms)
        self.progress = any(show_progress(m.cfg) for m in self.members)

    def _update_schedule(self) -> None:
        """The schedule with every controller's stops (members' own steps)."""
        stops = set().union(*(c.stops(self.schedule.max_steps) for c in self.controllers))
        self.schedule = self.schedule.with_stops(stops)

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
            self.recorder.end(program, program.training_rows(), Status.OK)
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
        val = program.measured("val")  # measured before this step's update, as the article does
        objective = program.objective_values() if program.stacked else None  # the launcher's best line
        if self.histograms:
            self.recorder.histograms(program, rows, own)
        self.recorder.log_points(program, at, rows, own, program.train(stop), val, objective)

    def _segment_end(self, stop: int) -> None:
        """Everything that happens at program step `stop`, in the order the module docstring gives."""
        at_stop = [p for p in self.programs if p.members and p.step == stop]
        diverged = [
            (p, j) for p in at_stop for j, m in enumerate(p.members) if not np.isfinite(m.last_losses).all()
        ]
        for controller in self.controllers:
            diverged, decisions = controller.rescue(stop, diverged)
            self._apply(decisions)
        for program, j in diverged:
            own = program.member_step(j)
            program.members[j].record.log.warning("loss is not finite by step %d: status diverged", own)
        self._apply([EndMembers(tuple(diverged), Status.DIVERGED)])
        for controller in self.controllers:  # each sees what the ones before it did
            self._apply(controller.act(stop, self.members_at(stop), self.schedule))
        for program in at_stop:
            self.recorder.checkpoint(program, [j for j in program.training_rows() if self._due(program, j)])
            self._end_finished(program)
        if (signum := signals.requested()) is not None:
            self.recorder.interrupt(self.programs, signum)
            raise signals.Interrupted(signum)
        for program in at_stop:
            program.keep(program.training_rows())
        if self.refill is not None:
            self._refill(stop)

    def _due(self, program: Program, row: int) -> bool:
        """Whether the member at `row` gets a checkpoint at its step (the schedule's or a controller's)."""
        own = program.member_step(row)
        return self.schedule.is_checkpoint(own) or any(c.checkpoint_at(own) for c in self.controllers)

    def _end_finished(self, program: Program) -> None:
        """End `ok` the members of `program` that reached max_steps."""
        done = [j for j in program.training_rows() if program.member_step(j) >= self.schedule.max_steps]
        self.recorder.end(program, done, Status.OK)

    def _refill(self, step: int) -> None:
        """New members take the free rows at program step `step`, each from its own start; programs
        left without members leave."""
        while placed := self.refill(step):
            for program, new in placed:
                if all(program is not p for p in self.programs):
                    self.programs.append(program)
                self.members += new
                for controller in self.controllers:
                    controller.admit(new)
            self._update_schedule()
            for program, _ in placed:
                self._end_finished(program)  # resumed from a checkpoint at max_steps
                program.keep(program.training_rows())
        self.programs = [p for p in self.programs if p.members]

    def members_at(self, step: int) -> list[Row]:
        """(program, row) of every member still training in the programs at program step `step`."""
        return [(p, j) for p in self.programs if p.step == step for j in p.training_rows()]

    def _apply(self, decisions: Sequence[Decision]) -> None:
        """Carry out a controller's decisions, in order."""
        for decision in decisions:
            match decision:
                case Note(at=None):
                    logging.getLogger(decision.source).info(decision.message, *decision.args)
                case Note(at=(program, row)):
                    program.members[row].record.log.info(decision.message, *decision.args)
                case EndMembers(rows=rows, status=status):
                    for program in {id(p): p for p, _ in rows}.values():
                        self.recorder.end(program, [j for p, j in rows if p is program], status)
                case CopyMembers(program=program):
                    program.copy_members(
                        list(decision.targets), list(decision.sources), list(decision.histories)
                    )
                case FollowHistories(program=program):
                    program.follow_histories()

"""Slot pools: a fixed number of rows that waiting configs keep full, as one or more programs.

As members end (finished, pruned, diverged), the next configs take their rows at that program step,
each from its own step 0 (or its checkpoint), while the others go on (sweeper.train.program: each
member at its own step). A pool's configs come from a plan's group, and once those are used up, from
a stream that asks for more as rows free (an Optuna study's trials).

Which program a new member joins is the pool's bucketing, by the shapes its model declares
(sweeper.task.models: the paddable keys):

- `pad_widths` (an accelerator, or `hydra.launcher.widths=pad`): one program, padded to its widest
  member; it widens as a wider member joins and narrows as the widest ones leave.
- otherwise (a CPU): the members that join at one step form a program per width (and data order), so no
  row computes at a width it does not need, and members that share their batches share one wide matmul,
  as many as gain from it on a CPU (sweeper.work.cpu_rows). Rows move between widths as the configs'
  widths shift: the pool counts its members, not a program's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sweeper import work
from sweeper.record.run import Clock, RunRecord
from sweeper.task import data
from sweeper.train.controllers import ScheduleReplay
from sweeper.train.devices import Placement
from sweeper.train.engine import Controller, Engine, Schedule
from sweeper.train.plan import chunks
from sweeper.train.program import Member, Program, new_member, show_widths
from sweeper.train.pruning import TrialPruning
from sweeper.train.run import check_batch_size

log = logging.getLogger(__name__)


def statuses(members: list[Member]) -> str:
    """How members ended, counted: `3 ok, 1 pruned`."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m.status.value] = counts.get(m.status.value, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def bucket(member: Member) -> tuple:
    """What members joining at one step must share to share a program unpadded: their widths, their data
    order and their start (then their batches coincide: one wide matmul, sweeper.train.segments)."""
    return tuple(sorted(member.widths.items())), tuple(member.order.seed_words), member.start


class SlotPool:
    """Pool `number` of `slots` rows over `cfgs` and their `records`, filled first from the configs at
    `waiting` (positions in `cfgs`); `more(free)`, where given, adds up to `free` configs to `cfgs` and
    `records` once those are used up and returns their positions (a stream). `pad_widths`: one padded
    program, else a program per width (the module docstring)."""

    def __init__(
        self,
        number: int,
        waiting: list[int],
        slots: int,
        cfgs: list[Any],
        records: list[RunRecord],
        info: data.Info,
        more: Callable[[int], list[int]] | None = None,
        pad_widths: bool = True,
    ):
        self.number, self.slots, self.cfgs, self.records = number, slots, cfgs, records
        self.waiting, self.info, self.more, self.pad_widths = list(waiting), info, more, pad_widths
        self.entered: list[Member] = []
        self.programs: list[Program] = []  # every program the pool has run, in order
        self.splits: Any = None
        self.placement: Placement | None = None
        for i in self.waiting:
            check_batch_size(cfgs[i], info.num_train)

    def enter(self, free: int, step: int) -> list[Member]:
        """Up to `free` waiting configs as members joining at program step `step`, their records opened."""
        if not self.waiting and self.more is not None:
            for i in self.more(free):
                check_batch_size(self.cfgs[i], self.info.num_train)
                self.waiting.append(i)
        new = []
        while self.waiting and len(new) < free:
            i = self.waiting.pop(0)
            self.records[i].log_config()
            member = new_member(self.cfgs[i], self.records[i], self.info)
            member.record.open(member.start, self.info)
            member.record.log.info(
                "in slot pool %d (%d slots) from program step %d", self.number, self.slots, step
            )
            new.append(member)
        self.entered.extend(new)
        return new

    def fill(self, step: int) -> list[tuple[Program, list[Member]]]:
        """The free rows taken at program step `step`: (program, its new members) for each program that
        new members joined, new programs among them; none once no config waits or no row is free."""
        free = self.slots - sum(len(p) for p in self.programs)
        new = self.enter(free, step) if free > 0 else []
        if not new:
            return []
        if self.pad_widths:
            live = [p for p in self.programs if p.members]
            if live:
                live[0].add(new)
                return [(live[0], new)]
            return [(self._program(new, step), new)]
        by_bucket: dict[tuple, list[Member]] = {}
        for member in new:
            by_bucket.setdefault(bucket(member), []).append(member)
        placed = []
        for members in by_bucket.values():
            size = self.placement.count * self._cpu_rows(members[0])
            placed += [(self._program(part, step), part) for part in chunks(members, size)]
        return placed

    def _cpu_rows(self, member: Member) -> int:
        """The most members of `member`'s bucket one program holds: on a CPU, what shares a wide matmul to
        advantage (sweeper.work.cpu_rows); elsewhere, every one that joins."""
        if self.placement.devices[0].platform != "cpu":
            return self.slots
        return work.cpu_rows(member.spec, member.cfg.batch_size)

    def _program(self, members: list[Member], step: int) -> Program:
        """A new program of `members` at program step `step`. Grouped, one member trains unstacked, as
        its run alone does: a vmapped step and evaluation of one cost more on a CPU."""
        program = Program(
            members,
            self.splits,
            stacked=self.pad_widths or len(members) > 1,
            placement=self.placement,
            step=step,
            slots=self.slots,
            pool=self.number,
        )
        self.programs.append(program)
        return program

    def train(
        self,
        splits: Any,
        placement: Placement,
        controllers: list[Controller],
        clock: Clock,
        on_end: Callable[[Member], None],
    ) -> list[Member]:
        """Train until no config waits and every member ended; every member that entered."""
        started, jobs = time.perf_counter(), len(self.waiting)
        self.splits, self.placement = splits, placement
        first = [program for program, _ in self.fill(0)]
        spans = f" on {placement.count} devices" if first[0].placement is not None else ""
        log.info(
            "slot pool %d: %s through %d slots, %s%s",
            self.number,
            f"{jobs} jobs" if self.more is None else "trials",
            self.slots,
            "one program padded to its widest member" if self.pad_widths else "a program per width",
            spans,
        )
        members = [m for p in first for m in p.members]
        controllers = [ScheduleReplay(), *controllers, TrialPruning(members)]
        engine = Engine(
            first,
            Schedule.of(members[0].cfg),
            controllers=controllers,
            clock=clock,
            on_end=on_end,
            refill=self.fill,
        )
        engine.run()
        self._log_done(time.perf_counter() - started)
        return self.entered

    def _log_done(self, elapsed_s: float) -> None:
        programs = self.programs
        steps = max(p.step for p in programs) if programs else 0
        trained = sum(p.member_steps for p in programs)
        needed, done = (sum(m.work[i] for m in self.entered) for i in (0, 1))
        widths = sorted({show_widths(p.widths) for p in programs})
        log.info(
            "slot pool %d done in %.1f s (compile %.1f s): %d jobs, %d program steps, %s (%s), "
            "slot occupancy %.2f, compute occupancy %.2f: %s",
            self.number,
            elapsed_s,
            sum(p.segments.compile_s for p in programs),
            len(self.entered),
            steps,
            f"{len(programs)} program{'' if len(programs) == 1 else 's'}",
            ", ".join(widths),
            trained / (self.slots * steps) if steps else 1.0,
            needed / done if done else 1.0,
            statuses(self.entered),
        )

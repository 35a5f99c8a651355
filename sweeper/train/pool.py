"""Slot pools: one program of a fixed number of rows that waiting configs keep full.

As members end (finished, pruned, diverged), the next configs take their rows at that program step,
each from its own step 0 (or its checkpoint), while the others go on (sweeper.train.program: each
member at its own step). A pool's configs come from a plan's group, and once those are used up, from
a stream that asks for more as rows free (an Optuna study's trials).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sweeper.record.run import Clock, RunRecord
from sweeper.task import data
from sweeper.train.controllers import ScheduleReplay
from sweeper.train.devices import Placement
from sweeper.train.engine import Controller, Engine, Schedule
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


class SlotPool:
    """Pool `number` of `slots` rows over `cfgs` and their `records`, filled first from the configs at
    `waiting` (positions in `cfgs`); `more(free)`, where given, adds up to `free` configs to `cfgs` and
    `records` once those are used up and returns their positions (a stream)."""

    def __init__(
        self,
        number: int,
        waiting: list[int],
        slots: int,
        cfgs: list[Any],
        records: list[RunRecord],
        info: data.Info,
        more: Callable[[int], list[int]] | None = None,
    ):
        self.number, self.slots, self.cfgs, self.records = number, slots, cfgs, records
        self.waiting, self.info, self.more = list(waiting), info, more
        self.entered: list[Member] = []
        self.program: Program | None = None
        for i in self.waiting:
            check_batch_size(cfgs[i], info.num_train)

    def enter(self, free: int) -> list[Member]:
        """Up to `free` waiting configs as members, their records opened."""
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
            at = 0 if self.program is None else self.program.step
            member.record.log.info(
                "in slot pool %d (%d slots) from program step %d", self.number, self.slots, at
            )
            new.append(member)
        self.entered.extend(new)
        return new

    def train(
        self,
        splits: Any,
        placement: Placement,
        controllers: list[Controller],
        clock: Clock,
        on_end: Callable[[Member], None],
        widths: dict[str, int],
    ) -> list[Member]:
        """Train until no config waits and every member ended; every member that entered."""
        started, jobs = time.perf_counter(), len(self.waiting)
        first = self.enter(self.slots)
        self.program = Program(
            first,
            splits,
            stacked=True,
            placement=placement,
            step=0,
            widths=widths,
            slots=self.slots,
            pool=self.number,
        )
        spans = f" on {placement.count} devices" if self.program.placement is not None else ""
        log.info(
            "slot pool %d: %s through %d slots, %s%s",
            self.number,
            f"{jobs} jobs" if self.more is None else "trials",
            self.slots,
            show_widths(self.program.widths),
            spans,
        )
        controllers = [ScheduleReplay(), *controllers, TrialPruning(first)]
        engine = Engine(
            [self.program],
            Schedule.of(first[0].cfg),
            controllers=controllers,
            clock=clock,
            on_end=on_end,
            refill=self.enter,
        )
        engine.run()
        self._log_done(time.perf_counter() - started)
        return self.entered

    def _log_done(self, elapsed_s: float) -> None:
        program = self.program
        log.info(
            "slot pool %d done in %.1f s (compile %.1f s): %d jobs, %d program steps, "
            "slot occupancy %.2f: %s",
            self.number,
            elapsed_s,
            program.segments.compile_s,
            len(self.entered),
            program.step,
            program.member_steps / program.slot_steps if program.slot_steps else 1.0,
            statuses(self.entered),
        )

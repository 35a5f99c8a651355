"""When things happen to runs: the schedule, and the loop that keeps it for any number of programs.

    Engine(programs, Schedule.of(cfg), controllers=[...]).run()

A single run is one unstacked program; a fused group is one or more stacked programs driven in
lockstep (sweeper.program). For each segment end (a log point, a checkpoint, a controller's step,
max_steps), in this order:

1. each program at a log point measures validation accuracy and writes histograms, trains to the
   segment end in one compiled scan, then writes its log point's scalars and lines;
2. members whose loss stopped being finite end `diverged`;
3. controllers act on the members at that step: successive halving and Optuna pruners end members
   `pruned`, population-based training copies and perturbs members (sweeper.controllers);
4. checkpoints are written where the schedule or a controller asks;
5. at max_steps every remaining member ends `ok`; ended members leave their program;
6. a stop signal (SIGTERM, ...) checkpoints every member still training, records it `interrupted`
   and raises `signals.Interrupted`.

Each member's record (sweeper.record) receives its lines, events, checkpoints and metrics.json.
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

from sweeper import signals, step
from sweeper.program import Member, Program
from sweeper.record import final_metrics
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
    def of(cls, cfg: Any, extra: Iterable[int] = ()) -> Schedule:
        return cls(cfg.max_steps, cfg.log_every, cfg.checkpoint_every, frozenset(extra))

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

    `started` (time.perf_counter()) and `data_s` date the members' timings; `on_end(member)` is called
    when a member's record is complete.
    """

    def __init__(
        self,
        programs: list[Program],
        schedule: Schedule,
        *,
        controllers: Iterable[Controller] = (),
        started: float | None = None,
        data_s: float = 0.0,
        on_end: Callable[[Member], None] | None = None,
    ):
        self.programs, self.controllers = programs, list(controllers)
        for controller in self.controllers:
            controller.start(programs)
        stops = set().union(*(c.stops(schedule.max_steps) for c in self.controllers))
        stops |= {c["step"] for p in programs for m in p.members for c in m.history.get("schedule", [])}
        self.schedule = Schedule(
            schedule.max_steps, schedule.log_every, schedule.checkpoint_every, frozenset(stops)
        )
        self.started = time.perf_counter() if started is None else started
        self.data_s, self.on_end = data_s, on_end
        self.total = sum(len(p) for p in programs)
        first = programs[0].members[0].cfg
        self.histograms = bool(first.histograms)
        self.progress = any(show_progress(m.cfg) for p in programs for m in p.members)

    # --- the loop -----------------------------------------------------------------------------------

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
            self.end(program, self._training_rows(program), Status.OK)
        return members

    def _advance(self, program: Program, stop: int) -> None:
        """Train `program` to `stop`, with the log point at its current step if it is one."""
        at = program.step
        logging_now = self.schedule.is_log_point(at)
        val = None
        if logging_now:  # measured before this step's update, as the article does
            val = program.val_accuracies()
            if self.histograms:
                self._write_histograms(program)
        losses, accuracies = program.train(stop)
        for j, member in enumerate(program.members):
            member.last_losses = losses[:, j]
            if logging_now:
                val_j = None if val is None else float(val[j])
                member.record.log_point(at, float(losses[0, j]), float(accuracies[0, j]), val_j)
                if "schedule" in member.history:
                    member.record.hyperparameters(at, member.lr, member.reg)
        if logging_now and val is not None and program.stacked:
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
        for program in at_stop:
            self._apply_schedules(program)
        for controller in self.controllers:
            controller.act(self, stop)
        if self.schedule.is_checkpoint(stop) or any(c.checkpoint_at(stop) for c in self.controllers):
            for program in at_stop:
                self._checkpoint(program, self._training_rows(program))
        if stop == self.schedule.max_steps:
            for program in at_stop:
                self.end(program, self._training_rows(program), Status.OK)
        if signals.requested() is not None:
            self._interrupt()
        for program in at_stop:
            program.keep(self._training_rows(program))

    # --- what controllers use -----------------------------------------------------------------------

    def members_at(self, step: int) -> list[tuple[Program, int]]:
        """(program, row) of every member still training that has reached `step`."""
        return [(p, j) for p in self.programs if p.step == step for j in self._training_rows(p)]

    @staticmethod
    def _training_rows(program: Program) -> list[int]:
        return [j for j, m in enumerate(program.members) if m.status is None]

    def end_members(self, members: list[tuple[Program, int]], status: Status) -> None:
        """End these (program, row) members with `status`."""
        for program in {id(p): p for p, _ in members}.values():
            self.end(program, [j for p, j in members if p is program], status)

    def end(self, program: Program, rows: list[int], status: Status) -> None:
        """Evaluate (unless diverged) and close the records of `program`'s members at `rows`."""
        if not rows:
            return
        members = [program.members[j] for j in rows]
        if status is Status.DIVERGED:
            evaluated = [None] * len(rows)
        else:
            if any(m.record.saved_step != program.step for m in members):
                self._checkpoint(program, rows)  # a member that ends early can go on alone later
            train = program.accuracies((program.splits.train.images, program.splits.train.labels), rows)
            val = program.val_accuracies()
            val = [None] * len(rows) if val is None else val[rows]
            test = program.accuracies(program.splits.test, rows)
            evaluated = [
                tuple(None if a is None else float(a) for a in accs)
                for accs in zip(train, val, test, strict=True)
            ]
        for member, accs in zip(members, evaluated, strict=True):
            member.status = status
            member.metrics = final_metrics(status, program.step, member.last_losses, accs)
            member.metrics.update(self._cost(program, member), **member.history)
            member.record.finish(member.metrics)
            member.record.close()
            if self.on_end is not None:
                self.on_end(member)

    # --- helpers --------------------------------------------------------------------------------------

    def _apply_schedules(self, program: Program) -> None:
        """Members whose schedule changes lr or reg at this step train on with the new values."""
        changed = False
        for member in program.members:
            if "schedule" in member.history and member.status is None:
                now = member.hyperparameters_at(program.step)
                changed |= now != (member.lr, member.reg)
                member.lr, member.reg = now
        if changed:
            program.set_hyperparameters()

    def _attempt(self, program: Program, member: Member) -> dict[str, Any]:
        """This attempt at `member`: the steps it ran and its share of the wall time so far."""
        return {
            "from_step": member.start,
            "to_step": program.step,
            "wall_time_s": round((time.perf_counter() - self.started) / self.total, 3),
        }

    def _cost(self, program: Program, member: Member) -> dict[str, Any]:
        """metrics.json's cost keys: wall time over every attempt, the attempts, this one's timings."""
        attempts = [*member.attempts, self._attempt(program, member)]
        wall = round(sum(a["wall_time_s"] for a in attempts), 3)
        return {"wall_time_s": wall, "attempts": attempts, "timings": self._timings(program)}

    def _timings(self, program: Program) -> dict[str, Any]:
        """Where this attempt's time went."""
        segments = program.segments
        elapsed = time.perf_counter() - self.started
        first_step_s = segments.first_step_done - self.started if segments.first_step_done else 0.0
        steps = program.step - min(m.start for m in program.members)
        timings = {
            "data_s": round(self.data_s, 3),
            "compile_s": round(segments.compile_s, 3),
            "first_step_s": round(first_step_s, 3),
            "train_s": round(segments.train_s, 3),
            "steps_run": steps,
            "steps_per_s": round(steps / segments.train_s, 1) if segments.train_s > 0 else None,
        }
        if program.stacked:
            timings |= {"fused_jobs": program.initial_size, "fused_wall_time_s": round(elapsed, 3)}
        return timings

    def _write_histograms(self, program: Program) -> None:
        first_batches = np.stack(
            [m.order.indices(program.step, program.step + 1)[0] for m in program.members]
        )
        logits = program.logits(first_batches)
        host = program.host_state()
        for j, member in enumerate(program.members):
            params, _ = program.member_state(j, host)
            member.record.histograms(program.step, {"logits": logits[j], **step.weight_tensors(params)})

    def _checkpoint(self, program: Program, rows: list[int]) -> None:
        if not rows:
            return
        host = program.host_state()
        for j in rows:
            member = program.members[j]
            if member.record.saved_step == program.step:
                continue
            params, opt_state = program.member_state(j, host)
            member.record.checkpoint(
                program.step,
                params=params,
                opt_state=opt_state,
                mean_image=program.splits.train.mean_image,
                data_order=member.order.state(program.step),
                history=member.history,
                attempts=[*member.attempts, self._attempt(program, member)],
                last_losses=member.last_losses,
            )

    def _interrupt(self) -> None:
        """Checkpoint and record every member still training as interrupted, then raise."""
        signum = signals.requested()
        for program in self.programs:
            rows = self._training_rows(program)
            self._checkpoint(program, rows)
            for j in rows:
                member = program.members[j]
                member.status = Status.INTERRUPTED
                member.record.interrupted(program.step, signum, self._cost(program, member))
                member.record.close()
        raise signals.Interrupted(signum)

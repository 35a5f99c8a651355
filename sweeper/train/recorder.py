"""What the engine has members' records write (sweeper.record.run): log points, checkpoints, endings and
interruptions. It reads programs and members and hands each record plain views (sweeper.record.views),
so that the record never reads the training machinery."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from sweeper.record.run import Clock
from sweeper.record.views import Ending, Seat, Snapshot, Span, Usage
from sweeper.status import Status
from sweeper.train.program import Member, Program, histogram_tensors

log = logging.getLogger("sweeper.train.engine")  # the engine's lines, whichever module writes them


def usage(program: Program) -> Usage:
    """What `program`'s training took so far."""
    segments = program.segments
    return Usage(
        compile_s=segments.compile_s,
        train_s=segments.train_s,
        first_step_done=segments.first_step_done,
        step=program.step,
        fused_jobs=program.initial_size if program.stacked else None,
        pool=Seat(program.pool, program.slots) if program.pool is not None else None,
    )


def span(program: Program, row: int) -> Span:
    """Where the member at `row` of `program` is: from its start to its own step, joined at which step."""
    member = program.members[row]
    return Span(member.start, program.member_step(row), member.offset + member.start, member.work)


class Recorder:
    """Writes members' records when the engine says. `clock` dates their cost; `on_end(member)` is called
    once a member's record is complete."""

    def __init__(self, clock: Clock, on_end: Callable[[Member], None] | None):
        self.clock, self.on_end = clock, on_end

    def histograms(self, program: Program, rows: list[int], own: list[int]) -> None:
        """The histograms of the members at `rows` at their own steps `own` (by row), before the step."""
        tensors = histogram_tensors(program)
        for j in rows:
            program.members[j].record.histograms(own[j], tensors[j])

    def log_points(
        self,
        program: Program,
        at: int,
        rows: list[int],
        own: list[int],
        trained: tuple,
        val: dict[str, np.ndarray] | None,
        objective: np.ndarray | None,
    ) -> None:
        """The log point at program step `at` of the members at `rows` (at their own steps `own`, by row):
        their first step's loss and batch accuracy of `trained` (losses, accuracies), and their
        validation accuracy and loss `val` (or None) and `objective` values (or None), measured before it."""
        losses, accuracies = trained
        for j in rows:
            member = program.members[j]
            val_j = None if val is None else {key: float(values[j]) for key, values in val.items()}
            member.record.log_point(own[j], float(losses[0, j]), float(accuracies[0, j]), val_j)
            if member.history.schedule:
                member.record.schedule_point(own[j], member.values.as_dict())
        if objective is not None and program.stacked:
            best = program.objective.ranking(objective)[0]
            where = f"step {at}" if len(set(own)) == 1 else f"program step {at}"
            line = "%s: %d jobs training, best %s %.4f (%s)"
            log.info(
                line,
                where,
                len(program),
                program.objective.label,
                objective[best],
                program.members[best].name,
            )

    def checkpoint(self, program: Program, rows: list[int]) -> None:
        """Checkpoint the members at `rows` that have none at this step yet."""
        rows = [j for j in rows if program.members[j].record.saved_step != program.member_step(j)]
        if not rows:
            return
        mean_image, scale = program.splits.train.norm
        fingerprint = program.splits.info.fingerprint
        for row, (params, opt_state) in program.member_states(rows):
            member, own = program.members[row], program.member_step(row)
            snapshot = Snapshot(
                step=own,
                params=params,
                opt_state=opt_state,
                mean_image=mean_image,
                scale=scale,
                data_fingerprint=fingerprint,
                data_order=member.order.state(own),
                history=member.history.as_record(),
                last_losses=member.last_losses,
            )
            member.record.checkpoint(snapshot, self.clock.attempt(member.start, own))

    def end(self, program: Program, rows: list[int], status: Status) -> None:
        """Evaluate (unless diverged) and close the records of `program`'s members at `rows`."""
        if not rows:
            return
        if status is Status.DIVERGED:  # its parameters are not finite: nothing to evaluate or keep
            evaluated = [None] * len(rows)
        else:
            self.checkpoint(program, rows)  # a member that ends early can go on alone later
            evaluated = program.final_metrics(rows)
        for row, measured in zip(rows, evaluated, strict=True):
            member = program.members[row]
            cost = self.clock.cost(usage(program), span(program, row))
            history = member.history.as_record()
            ending = Ending(status, program.member_step(row), member.last_losses, measured, history)
            member.record.finish(ending, cost)
            if self.on_end is not None:
                self.on_end(member)

    def interrupt(self, programs: list[Program], signum: int) -> None:
        """Checkpoint and record every member still training as interrupted by `signum`."""
        for program in programs:
            rows = program.training_rows()
            self.checkpoint(program, rows)
            for j in rows:
                cost = self.clock.cost(usage(program), span(program, j))
                program.members[j].record.interrupted(program.member_step(j), signum, cost)

"""Controllers decide, the engine acts: the `Controller` interface and the decisions it returns.

At a segment end a controller looks at the members that reached that step (their programs, steps and
validation accuracies) and returns what should happen to them, in order, as decisions: log lines
(`Note`), members that end (`EndMembers`), members that copy others (`CopyMembers`), programs whose
members take up their history's new lr and reg (`FollowHistories`). The engine (sweeper.train.engine)
carries each controller's decisions out, in order, before it asks the next controller, so that every
controller sees what the ones before it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.status import Status
from sweeper.train.history import History
from sweeper.train.program import Member, Program
from sweeper.train.schedule import Schedule

Row = tuple[Program, int]  # a member: its program and its row in it


@dataclass(frozen=True)
class Note:
    """A log line, `message % args`: into the record of the member at `at`, or, with `at` None, into the
    log named `source` (the controller's module)."""

    message: str
    args: tuple[Any, ...] = ()
    at: Row | None = None
    source: str = __name__

    @classmethod
    def to(cls, at: Row, message: str, *args: Any) -> Note:
        """A line for the record of the member at `at`."""
        return cls(message, args, at=at)

    @classmethod
    def of(cls, source: str, message: str, *args: Any) -> Note:
        """A line for the log named `source`."""
        return cls(message, args, source=source)


@dataclass(frozen=True)
class EndMembers:
    """The members at `rows` end with `status` (checkpointed and evaluated unless diverged)."""

    rows: tuple[Row, ...]
    status: Status


@dataclass(frozen=True)
class CopyMembers:
    """In `program`, the members at rows `targets` take the parameters, optimizer state and last losses
    of the members at rows `sources`, and train on as their new `histories` say."""

    program: Program
    targets: tuple[int, ...]
    sources: tuple[int, ...]
    histories: tuple[History, ...]


@dataclass(frozen=True)
class FollowHistories:
    """The members of `program` whose history changes lr or reg at their step train on with the new values."""

    program: Program


Decision = Note | EndMembers | CopyMembers | FollowHistories


class Controller:
    """Something that decides what happens to members during training. Subclasses override what they need.

    `lockstep`: whether it ranks or copies members at one common step (so they train side by side, never
    in a slot pool, where each member is at its own step). `one_program`: whether its members must share
    one program (then they resume from one step)."""

    lockstep = False
    one_program = False

    def start(self, programs: list[Program]) -> None:
        """Check and prepare the members before training (raise ConfigError to refuse them)."""

    def stops(self, max_steps: int) -> set[int]:
        """Steps at which the loop must stop for this controller."""
        return set()

    def checkpoint_at(self, step: int) -> bool:
        """Whether members still training get a checkpoint at their step `step` (after `act`)."""
        return False

    def admit(self, members: list[Member]) -> None:
        """Members join a program while the others train (a slot pool); prepare them as `start` did."""

    def rescue(self, step: int, diverged: list[Row]) -> tuple[list[Row], Sequence[Decision]]:
        """Given the members whose loss stopped being finite at program step `step`: those that should end
        `diverged`, and what to do with the others."""
        return diverged, ()

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        """What to do with `members`, every member still training in the programs at program step `step`
        (each at its own step, program.member_step(row)), after their segment of `schedule`."""
        return ()

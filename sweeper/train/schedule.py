"""When the loop stops: a run's schedule of log points, checkpoints and the steps controllers ask for
(sweeper.train.engine keeps it, for each member at its own step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
        """The schedule a run's config (max_steps, log_every, checkpoint_every) asks for."""
        return cls(cfg.max_steps, cfg.log_every, cfg.checkpoint_every)

    def with_stops(self, extra: set[int]) -> Schedule:
        """This schedule with the stops `extra` (controllers') instead of its own extra stops."""
        return Schedule(self.max_steps, self.log_every, self.checkpoint_every, frozenset(extra))

    def next_stop(self, after: int) -> int | None:
        """The first stop later than step `after`, None from max_steps on."""
        if after >= self.max_steps:
            return None
        following = [self.max_steps, *(s for s in self.extra if after < s < self.max_steps)]
        following += [(after // every + 1) * every for every in (self.log_every, self.checkpoint_every)]
        return min(following)

    def is_log_point(self, step: int) -> bool:
        """Whether a run logs at `step` (every log_every steps, never at max_steps)."""
        return step % self.log_every == 0 and step < self.max_steps

    def is_checkpoint(self, step: int) -> bool:
        """Whether a run is checkpointed at `step` (every checkpoint_every steps, and at max_steps)."""
        return step % self.checkpoint_every == 0 or step == self.max_steps

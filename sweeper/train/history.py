"""A run's history: the learning rate and L2 constant it trains with from each step on, and (in
population-based training) which member it copied when.

Kept as plain values in the run's checkpoints and metrics.json (`History.as_record`), so that a
resumed run, the sweep summary and a replay (`schedule=...`) all read the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class Change(NamedTuple):
    """From `step` on, train with learning rate `lr` and L2 constant `reg`."""

    step: int
    lr: float
    reg: float


class Copy(NamedTuple):
    """At `step` the run took the state of the run named `source`, for `reason` (exploit, diverged)."""

    step: int
    source: str
    reason: str


@dataclass(frozen=True)
class History:
    """`schedule`: the changes of lr and reg, the first at step 0 (empty: the config's hold throughout).
    `lineage`: the copies a population member made (None: the run is no population member)."""

    schedule: tuple[Change, ...] = ()
    lineage: tuple[Copy, ...] | None = None

    @classmethod
    def of_config(cls, cfg: Any, *, population: bool = False) -> History:
        """A fresh run's history: its config's `schedule`, or for a population member its own lr and
        reg from step 0 and an empty lineage."""
        start = Change(0, float(cfg.lr), float(cfg.reg))
        if population:
            return cls((start,), ())
        if not cfg.schedule:
            return cls()
        return cls((start, *(Change(int(c.step), float(c.lr), float(c.reg)) for c in cfg.schedule)))

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> History:
        """The history `as_record` wrote (into a checkpoint)."""
        schedule = tuple(
            Change(int(c["step"]), float(c["lr"]), float(c["reg"])) for c in record.get("schedule", [])
        )
        lineage = record.get("lineage")
        if lineage is not None:
            lineage = tuple(Copy(int(c["step"]), c["from"], c["reason"]) for c in lineage)
        return cls(schedule, lineage)

    def as_record(self) -> dict[str, list[dict[str, Any]]]:
        """Plain values for checkpoints and metrics.json: `schedule` and `lineage`, where the run has them."""
        record = {}
        if self.schedule:
            record["schedule"] = [c._asdict() for c in self.schedule]
        if self.lineage is not None:
            record["lineage"] = [{"step": c.step, "from": c.source, "reason": c.reason} for c in self.lineage]
        return record

    def hyperparameters_at(self, step: int, default: tuple[float, float]) -> tuple[float, float]:
        """(lr, reg) from `step` on: the latest change up to `step`, else `default` (the config's)."""
        lr_reg = default
        for change in self.schedule:
            if change.step <= step:
                lr_reg = (change.lr, change.reg)
        return lr_reg

    def change_steps(self) -> set[int]:
        """The steps at which lr or reg change (step 0, where training starts, is none)."""
        return {c.step for c in self.schedule if c.step > 0}

    def copied(self, step: int, lr: float, reg: float, source: str, reason: str) -> History:
        """This history (of the run copied, named `source`) as the copying run's: up to `step`, then its
        new lr and reg, and the copy in its lineage."""
        schedule = (*(c for c in self.schedule if c.step < step), Change(step, lr, reg))
        return History(schedule, (*(self.lineage or ()), Copy(step, source, reason)))

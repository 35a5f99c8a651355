"""A run's history: the learning rate, L2 constant and optimizer values it trains with from each step on,
and (in population-based training) which member it copied when.

Kept as plain values in the run's checkpoints and metrics.json (`History.as_record`), so that a
resumed run, the sweep summary and a replay (`schedule=...`) all read the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from sweeper import config


class Values(NamedTuple):
    """What a run trains with that may change while it trains, each member its own: learning rate, L2
    constant, and the optimizer's numeric keys as sorted (key, value) pairs (momentum, b1, ...)."""

    lr: float
    reg: float
    optimizer: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, lr: float, reg: float, optimizer: dict[str, float] | None = None) -> Values:
        return cls(float(lr), float(reg), tuple(sorted((k, float(v)) for k, v in (optimizer or {}).items())))

    def get(self, key: str) -> float:
        """A value by its config key: `lr`, `reg` or `optimizer.<key>`."""
        if key in ("lr", "reg"):
            return getattr(self, key)
        return dict(self.optimizer)[key.removeprefix("optimizer.")]

    def scaled(self, factors: dict[str, float]) -> Values:
        """These values with those of `factors`' keys (as `get` names them) multiplied."""
        optimizer = {k: v * factors.get(f"optimizer.{k}", 1.0) for k, v in self.optimizer}
        return Values.of(self.lr * factors.get("lr", 1.0), self.reg * factors.get("reg", 1.0), optimizer)

    def as_dict(self) -> dict[str, float]:
        """By config key: {lr, reg, optimizer.momentum, ...}."""
        return {"lr": self.lr, "reg": self.reg, **{f"optimizer.{k}": v for k, v in self.optimizer}}


class Change(NamedTuple):
    """From `step` on, train with `values`."""

    step: int
    values: Values

    def as_record(self) -> dict[str, Any]:
        record = {"step": self.step, "lr": self.values.lr, "reg": self.values.reg}
        return record | ({"optimizer": dict(self.values.optimizer)} if self.values.optimizer else {})

    @classmethod
    def of_record(cls, record: Any, default: Values | None = None) -> Change:
        """A change from its record (or a config's schedule entry); optimizer keys it leaves out keep
        their `default` value."""
        optimizer = dict(default.optimizer) if default else {}
        optimizer |= {k: float(v) for k, v in dict(record.get("optimizer") or {}).items()}
        return cls(int(record["step"]), Values.of(record["lr"], record["reg"], optimizer))


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
        """A fresh run's history: its config's `schedule`, or for a population member its own values
        from step 0 and an empty lineage."""
        start = Change(0, config_values(cfg))
        if population:
            return cls((start,), ())
        if not cfg.schedule:
            return cls()
        return cls((start, *(Change.of_record(c, start.values) for c in cfg.schedule)))

    @classmethod
    def of_record(cls, record: dict[str, Any]) -> History:
        """The history `as_record` wrote (into a checkpoint)."""
        schedule = tuple(Change.of_record(c) for c in record.get("schedule", []))
        lineage = record.get("lineage")
        if lineage is not None:
            lineage = tuple(Copy(int(c["step"]), c["from"], c["reason"]) for c in lineage)
        return cls(schedule, lineage)

    def as_record(self) -> dict[str, list[dict[str, Any]]]:
        """Plain values for checkpoints and metrics.json: `schedule` and `lineage`, where the run has them."""
        record = {}
        if self.schedule:
            record["schedule"] = [c.as_record() for c in self.schedule]
        if self.lineage is not None:
            record["lineage"] = [{"step": c.step, "from": c.source, "reason": c.reason} for c in self.lineage]
        return record

    def hyperparameters_at(self, step: int, default: Values) -> Values:
        """The values from `step` on: the latest change up to `step`, else `default` (the config's); an
        optimizer key the change leaves out (a record written before changes held them) keeps the
        default's."""
        values = default
        for change in self.schedule:
            if change.step <= step:
                values = change.values
        optimizer = dict(default.optimizer) | dict(values.optimizer)
        return values._replace(optimizer=tuple(sorted(optimizer.items())))

    def change_steps(self) -> set[int]:
        """The steps at which the values change (step 0, where training starts, is none)."""
        return {c.step for c in self.schedule if c.step > 0}

    def copied(self, step: int, values: Values, source: str, reason: str) -> History:
        """This history (of the run copied, named `source`) as the copying run's: up to `step`, then its
        new `values`, and the copy in its lineage."""
        schedule = (*(c for c in self.schedule if c.step < step), Change(step, values))
        return History(schedule, (*(self.lineage or ()), Copy(step, source, reason)))


def config_values(cfg: Any) -> Values:
    """The values a run's config starts it with."""
    optimizer = {k: cfg.optimizer[k] for k in config.optimizer_numeric_keys(cfg.optimizer)}
    return Values.of(cfg.lr, cfg.reg, optimizer)

"""Where asynchronous successive halving (sweeper.train.controllers.AsyncHalving) keeps the results at
its rungs: in memory, for one process, or in a JSON-lines file that a resumed sweep and other processes on
the same sweep folder share. Both answer the one question the algorithm asks: `record(rung, values)`,
every result at that rung so far, these included."""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol


class RungStore(Protocol):
    """Results at the rungs, by job name."""

    def record(self, rung: int, values: dict[str, float]) -> dict[str, float]:
        """Add `values` ({job: objective value}) at `rung`; return every result at `rung` so far."""
        ...

    @property
    def reached(self) -> dict[int, dict[str, float]]:
        """Every result so far: {rung: {job: objective value}}."""
        ...


class MemoryRungs:
    """Results kept in this process (by every engine that shares the controller)."""

    def __init__(self) -> None:
        self._reached: dict[int, dict[str, float]] = {}

    def record(self, rung: int, values: dict[str, float]) -> dict[str, float]:
        """Add `values` at `rung`; every result at `rung` so far."""
        self._reached.setdefault(rung, {}).update(values)
        return dict(self._reached[rung])

    @property
    def reached(self) -> dict[int, dict[str, float]]:
        """Every result so far: {rung: {job: objective value}}."""
        return self._reached


class FileRungs:
    """Results in the JSON-lines file `path`, a line `{"rung", "job", "value"}` per result (the objective's
    value), read and appended under a file lock: every process on the sweep folder ranks against all of
    them."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def record(self, rung: int, values: dict[str, float]) -> dict[str, float]:
        """Add `values` at `rung` to the file; every result at `rung` in it, these included."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # read and append as one, across processes
            f.seek(0)
            seen = {job: value for at, job, value in _entries(f) if at == rung}
            for job, value in values.items():
                f.write(json.dumps({"rung": rung, "job": job, "value": value}) + "\n")
        return seen | values

    @property
    def reached(self) -> dict[int, dict[str, float]]:
        """Every result in the file: {rung: {job: objective value}} (empty without a file)."""
        reached: dict[int, dict[str, float]] = {}
        with contextlib.suppress(FileNotFoundError), open(self.path) as f:
            fcntl.flock(f, fcntl.LOCK_SH)
            for rung, job, value in _entries(f):
                reached.setdefault(rung, {})[job] = value
        return reached


def _entries(lines: Iterable[str]) -> Iterator[tuple[int, str, float]]:
    """(rung, job, value) of each well-formed line (a line cut off by a kill is skipped; a file written
    before objectives were configurable names the value `val_accuracy`)."""
    for line in lines:
        try:
            entry = json.loads(line)
            value = entry["value"] if "value" in entry else entry["val_accuracy"]
            parsed = int(entry["rung"]), str(entry["job"]), float(value)
        except (ValueError, KeyError, TypeError):
            continue
        yield parsed

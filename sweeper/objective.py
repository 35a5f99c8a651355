"""What "best" means: the metric a sweep optimises and whether higher or lower is better. No JAX.

    objective: {metric: val_loss, mode: min}      # in a config; the default is val_accuracy, max

Every consumer asks an `Objective`: the summary's ranking and best command, successive halving, PBT,
trial pruning, the sweep's TensorBoard run, the value run.py returns to Hydra's sweepers, and the
direction of an Optuna study. Losses are the mean cross-entropy over a whole split, without the L2 term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sweeper.config import ConfigError
from sweeper.task import data

METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
MODES = ("max", "min")
DIRECTIONS = {"max": "maximize", "min": "minimize"}  # Optuna's words for the modes
# Where each kind of metric can lie: a run without a value reports the end that is worst for the mode.
BOUNDS = {"accuracy": (0.0, 1.0), "loss": (0.0, math.inf)}


@dataclass(frozen=True)
class Objective:
    """`metric` (one of METRICS) to `mode` (max or min)."""

    metric: str = "val_accuracy"
    mode: str = "max"

    @classmethod
    def of(cls, cfg: Any) -> Objective:
        """The objective a config names (its `objective` node; the default without one), checked."""
        node = cfg.get("objective") if hasattr(cfg, "get") else None
        objective = cls(str(node["metric"]), str(node["mode"])) if node else cls()
        objective.check()
        return objective

    def check(self) -> None:
        """Raise ConfigError, naming the key, for a metric or mode sweeper cannot optimise."""
        if self.metric.startswith("test_"):
            raise ConfigError(
                f"objective.metric={self.metric} is refused: choosing on the test set leaks it into the "
                f"choice (use {self.metric.replace('test_', 'val_', 1)})"
            )
        if self.metric not in METRICS:
            raise ConfigError(f"objective.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.mode not in MODES:
            raise ConfigError(f"objective.mode must be max or min, got {self.mode!r}")

    @property
    def split(self) -> str:
        """The split it is measured on: `val` or `train`."""
        return self.metric.split("_", 1)[0]

    @property
    def kind(self) -> str:
        """`accuracy` or `loss`."""
        return self.metric.split("_", 1)[1]

    @property
    def label(self) -> str:
        """Its name in log lines and tables: `val accuracy`, `val loss`, ..."""
        return self.metric.replace("_", " ")

    @property
    def direction(self) -> str:
        """Optuna's direction for it: maximize or minimize."""
        return DIRECTIONS[self.mode]

    @property
    def worst(self) -> float:
        """The value a run without a result reports (failed, diverged, or skipped): never the best."""
        low, high = BOUNDS[self.kind]
        return low if self.mode == "max" else high

    def value(self, metrics: dict[str, Any]) -> float | None:
        """The objective's value in a run's metrics (metrics.json's keys): the metric where it is finite,
        the worst value where the run has a result but no finite metric, None where the run has no such
        split (a single run with data.val_size=0)."""
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            return float(value)
        has_split = any(metrics.get(f"{self.split}_{kind}") is not None for kind in BOUNDS)
        return None if not has_split and metrics.get("status") == "ok" else self.worst

    def score(self, value: float | None) -> float:
        """`value` on a scale where higher is better whatever the mode (-inf for none or NaN)."""
        if value is None or math.isnan(value):
            return -math.inf
        return value if self.mode == "max" else -value

    def better(self, value: float | None, than: float | None) -> bool:
        """Whether `value` is strictly better than `than`."""
        return self.score(value) > self.score(than)

    def ranking(self, values: Sequence[float]) -> list[int]:
        """Indices of `values`, best first (ties in their order)."""
        return sorted(range(len(values)), key=lambda i: -self.score(values[i]))

    def best(self, values: Iterable[float | None]) -> float | None:
        """The best of `values` (None without any)."""
        return max(values, key=self.score, default=None)

    def needs_validation(self) -> bool:
        """Whether it is measured on the validation split (a sweep needs data.val_size > 0)."""
        return self.split == "val"


def check_sweep_objective(cfg: Any) -> None:
    """Raise ConfigError where a sweep could not rank its jobs by `cfg`'s objective: it is measured on
    the validation split and data.val_size=0 holds none (a single run may: it reports no objective)."""
    objective = Objective.of(cfg)
    if objective.needs_validation() and data.describe(cfg.data).num_val == 0:
        raise ConfigError(
            f"objective.metric={objective.metric} ranks a sweep on the validation split, which "
            "data.val_size=0 leaves empty: set data.val_size > 0 (or a train_ objective)"
        )


def check_sweep(cfg: Any, swept: Iterable[str]) -> None:
    """Raise ConfigError, before a sweep launches, where its objective cannot rank it: see
    check_sweep_objective; and objective.* among the `swept` keys (one sweep ranks by one objective)."""
    if keys := sorted(k for k in swept if k == "objective" or k.startswith("objective.")):
        raise ConfigError(f"{keys[0]} is what the sweep ranks by: give it one value, not a sweep")
    check_sweep_objective(cfg)

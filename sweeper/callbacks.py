"""Hydra callback for multiruns: progress (job k of N, elapsed, time left) and the sweep summary.

Enabled in `conf/config.yaml` under `hydra.callbacks`. No JAX: it runs in Hydra's process.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sweeper import summary

log = logging.getLogger(__name__)


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch, where the sweeper makes that knowable up front."""
    sweeper_cfg = config.hydra.sweeper
    if "n_trials" in sweeper_cfg:  # Optuna
        return int(sweeper_cfg.n_trials)
    if "BasicSweeper" not in str(sweeper_cfg.get("_target_", "")):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper_cfg.get("params") or {}).items()]
    params += [str(o) for o in config.hydra.overrides.task]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return sum(len(batch) for batch in batches)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class SweepCallback(Callback):
    """Logs sweep progress per job and writes the summary when the multirun ends."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.total: int | None = None
        self.finished = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started, self.finished = time.monotonic(), 0
        try:
            self.total = count_jobs(config)
        except Exception:  # an unusual sweeper: progress without a total is still progress
            self.total = None

    def _position(self, config: DictConfig) -> str:
        k = int(config.hydra.job.num) + 1
        return f"job {k} of {self.total}" if self.total else f"job {k}"

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.started is not None:
            log.info("%s: %s", self._position(config), Path(config.hydra.runtime.output_dir).name)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.started is None:
            return
        self.finished += 1
        elapsed = time.monotonic() - self.started
        left = ""
        if self.total:
            remaining = max(self.total - self.finished, 0)
            left = f", about {_duration(elapsed / self.finished * remaining)} left"
        status = "done" if job_return.status == JobStatus.COMPLETED else "FAILED"
        log.info("%s %s, %s elapsed%s", self._position(config), status, _duration(elapsed), left)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summary.summarize(sweep_dir)
        crashed = [job for row in rows for job in row.jobs if job.status == "crashed"]
        if crashed:  # Hydra ignores exceptions from callbacks; SystemExit still sets the exit status
            print(f"error: {len(crashed)} job(s) crashed, see {sweep_dir / 'summary.md'}", file=sys.stderr)
            sys.exit(1)

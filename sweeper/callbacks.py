"""Hydra callback for multiruns: progress (job k of N, elapsed, time left) and the sweep summary.

Enabled in `conf/config.yaml` under `hydra.callbacks`. No JAX: it runs in Hydra's process.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweeper import summary
from sweeper.config import MULTIRUN_RECORD, ConfigError, override_key, sweep_overrides
from sweeper.errors import exit_with
from sweeper.objective import check_sweep
from sweeper.record.writer import METRICS_FILE
from sweeper.status import Status
from sweeper.task import data, models

log = logging.getLogger(__name__)


def count_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep will launch, where the sweeper makes that knowable up front."""
    sweeper_cfg = config.hydra.sweeper
    if "n_trials" in sweeper_cfg:  # Optuna
        return int(sweeper_cfg.n_trials)
    if "BasicSweeper" not in str(sweeper_cfg.get("_target_", "")):
        return None
    # The basic sweeper runs the product of each key's values, a key given twice taking its last.
    sizes = {}
    for override in sweep_overrides(config.hydra):
        if override.is_sweep_override() and not override.is_discrete_sweep():
            return None  # an interval: the basic sweeper refuses it
        swept = override.is_sweep_override()
        sizes[override.get_key_element()] = len(list(override.sweep_string_iterator())) if swept else 1
    return math.prod(sizes.values())


def configure_parallel_workers(config: DictConfig) -> dict[str, str]:
    """Environment for a launcher that runs jobs side by side in fresh processes (joblib/loky, submitit).

    Set in Hydra's process before the workers start, so every worker's JAX sees it: thread limits so
    that N workers share the cores instead of each starting one thread per core, and GPU memory
    allocated on demand, so that several jobs fit on one GPU.
    """
    launcher = str(config.hydra.launcher.get("_target_", ""))
    if "joblib" not in launcher.lower():
        return {}
    n_jobs = int(config.hydra.launcher.get("n_jobs") or -1)
    cores = os.cpu_count() or 1
    workers = cores if n_jobs < 1 else min(n_jobs, cores)
    threads = max(1, cores // workers)
    env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / workers:.2f}"
    if threads == 1:  # one core per worker: XLA's own matmul threads would only fight each other
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            env["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    for name, value in env.items():
        os.environ.setdefault(name, value)
    log.info("parallel workers: %d, %d thread(s) each", workers, threads)
    return env


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class SweepCallback(Callback):
    """Logs sweep progress per job and writes the summary when the multirun ends.

    Progress is counted from the job folders' metrics.json files, not from this object's memory: with
    the joblib or submitit launchers each job runs in another process, holding its own copy of it.
    """

    def __init__(self) -> None:
        self.started: float | None = None  # wall clock (time.time): comparable across processes
        self.total: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:  # before any job: bad data, or a sweep its objective cannot rank, is refused in one line
            overrides = sweep_overrides(config.hydra)
            swept = {override_key(o.get_key_element()) for o in overrides if o.is_sweep_override()}
            if "data" in config:
                data.describe(config.data)  # a user's arrays: loaded and checked once, here
            if "data" in config and config.get("model") is not None:  # a model that cannot build
                models.abstract(models.of_config(config))
            check_sweep(config, swept)
        except (ConfigError, data.DataError) as error:  # Hydra turns a callback's exceptions into warnings
            exit_with(error)
        self.started = time.time()
        configure_parallel_workers(config)
        # Hydra's basic sweeper writes multirun.yaml; Optuna's does not, and the summary needs it.
        record = Path(config.hydra.sweep.dir) / MULTIRUN_RECORD
        if not record.exists():
            record.parent.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(config, record)
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
        results = [p.stat().st_mtime for p in Path(config.hydra.sweep.dir).glob(f"*/{METRICS_FILE}")]
        done_now = sum(mtime >= self.started for mtime in results)  # this attempt's, not a resumed sweep's
        elapsed = time.time() - self.started
        left = ""
        if self.total and done_now:
            remaining = max(self.total - len(results), 0)
            left = f", about {_duration(elapsed / done_now * remaining)} left"
        status = "done" if job_return.status == JobStatus.COMPLETED else "FAILED"
        log.info("%s %s, %s elapsed%s", self._position(config), status, _duration(elapsed), left)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = summary.summarize(sweep_dir)
        crashed = [job for row in rows for job in row.jobs if job.status is Status.CRASHED]
        if crashed:  # Hydra ignores exceptions from callbacks; SystemExit still sets the exit status
            print(f"error: {len(crashed)} job(s) crashed, see {sweep_dir / 'summary.md'}", file=sys.stderr)
            sys.exit(1)

"""Command-line glue for `run.py`: dispatch on `mode`, return the objective, report bad input in one line.

Importing it has no side effects: run.py registers sweeper's configs (sweeper.config.register) before
Hydra composes them, and Hydra's launchers hand the registrations to their worker processes with the
rest of Hydra's state.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sweeper import signals
from sweeper.checks import validate
from sweeper.config import Mode, hyperparameters
from sweeper.errors import exit_with, one_line, user_errors
from sweeper.objective import Objective, check_sweep_objective
from sweeper.record.writer import finished_metrics
from sweeper.sweep.locks import JobLock

log = logging.getLogger(__name__)


def run(cfg: Any) -> float | None:
    """Train (or, with mode=eval, evaluate a checkpoint) and return the value of the objective
    (sweeper.objective): what Hydra's sweepers (Optuna's) optimise; None for a single run without the
    split the objective is measured on.

    A single run reports bad input in one line and exits 2. A sweep job never raises: see `sweep_job`.
    Both stop gracefully on SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 (sweeper.signals).
    """
    hydra_cfg = HydraConfig.get()
    workdir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        with signals.graceful_stop():
            if multirun:
                return sweep_job(cfg, workdir)
            try:
                return _run(cfg, workdir)
            except user_errors() as error:
                exit_with(error)
    except signals.Interrupted as stopped:
        stopped.resume_hint = (
            f"run the same command with hydra.sweep.dir={workdir.parent} to continue"
            if multirun
            else f"continue with resume=true {hydra_override('hydra.run.dir', workdir)}"
        )
        raise


def hydra_override(key: str, value: Any) -> str:
    """`key=value` to paste into a shell, quoted as Hydra's override parser needs it (the folder of a
    member going on alone is named by its overrides: `=` and `,` in a value)."""
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    if any(c in text for c in '"$`\\!'):
        return shlex.quote(f"{key}='{text}'")
    return f"\"{key}='{text}'\""


def sweep_job(cfg: Any, workdir: Path) -> float:
    """One job of a sweep. A job another process is training, or one that finished before, is skipped;
    an interrupted one resumes from its latest checkpoint; a crash is recorded in the job's
    metrics.json (status `crashed`) so that the sweep goes on. A job without a result here (held by
    another process, crashed) returns the objective's worst value: never the best."""
    signals.check()  # a stop asked for between jobs: start no other
    worst = Objective.of(cfg).worst
    with JobLock(workdir) as lock:
        if not lock.held:
            log.info("%s is training this job: skipped here", lock.holder())
            return worst
        if (done := finished_metrics(workdir, warn=log.warning)) is not None:
            log.info("finished in an earlier attempt (status %s): skipped", done["status"])
            return Objective.of(cfg).value(done)  # under this sweep's objective, which may be new
        started = time.perf_counter()
        try:
            OmegaConf.update(cfg, "resume", True)
            check_sweep_objective(cfg)
            return _run(cfg, workdir)
        except Exception as error:
            log.exception("job crashed")
            from sweeper.record.writer import record_crash

            cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
            elapsed = time.perf_counter() - started
            record_crash(workdir, hyperparameters(cfg_dict), one_line(error), elapsed, worst)
            return worst


def _run(cfg: Any, workdir: Path) -> float | None:
    validate(cfg)
    from sweeper import train  # imported here so that --help and config errors answer without JAX

    if cfg.jax_cache_dir:
        train.enable_compilation_cache(cfg.jax_cache_dir)
    if Mode(cfg.mode) is Mode.eval:
        return train.evaluate_checkpoint(cfg, cfg.checkpoint)["test_accuracy"]
    return train.train_and_evaluate(cfg, workdir)["objective"]


def main(hydra_main: Callable[[], Any]) -> None:
    """Call a `@hydra.main` function; bad overrides become one line on stderr and exit status 2, a stop
    signal ends it after a checkpoint with the shell's status for that signal (128 + its number)."""
    try:
        with signals.graceful_stop():
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for full tracebacks
                hydra_main()
                return
            os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise instead of printing a multi-line report
            try:
                hydra_main()
            except user_errors() as error:
                exit_with(error)
    except signals.Interrupted as stopped:
        print(f"{stopped}: every run still training was checkpointed; {stopped.resume_hint}", file=sys.stderr)
        sys.exit(stopped.exit_code)

"""The SLURM launcher's work, imported only when it launches.

The launcher runs hydra_submitit_launcher's own `launch`, which submits the sweep as one array (the
launcher itself pickled as each job's callable, so that submitit's USR2 handler requeues it through
`checkpoint`); `wait` then replaces its wait on each job's `results()`:

- a job whose result file exists returns its result (the JobReturn that Hydra's `run_job` made in the
  job). A result that raises (an error outside the task) or a failed JobReturn (the task raised: a
  sweep job records its own errors, so this is e.g. submitit's UncompletedJobError "timed-out too many
  times", raised by its USR2 handler after the job checkpointed) becomes a failed job as below;
- a job that `squeue` no longer lists and that has no result file `lost_after_s` later ended without a
  result: cancelled (`scancel`), failed outside Python (a node failure, out of memory) or purged. It
  becomes a failed job whose error names its SLURM id, its state where `sacct` knows it, and how to
  resume it. A job being requeued stays listed (PENDING), so a preemption is waited out, not lost.

submitit's own wait asks `sacct` instead of `squeue`: without accounting `sacct` fails, the state stays
UNKNOWN and `results()` waits forever; with it, a cancelled job raises UncompletedJobError.

The failed jobs are `UnfinishedJob` returns: their status is FAILED (Optuna fails the trial, the
callbacks see a failure), but reading `return_value` gives None instead of raising, because Hydra's
basic sweeper reads every result to raise the first failure, which would end the multirun before its
`on_multirun_end` callbacks (sweeper's summary). A callback added for that end then exits with status 1
and one line naming the jobs, after the summary is written.
"""

# No `from __future__ import annotations` (see config.py).
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SQUEUE_TIMEOUT_S = 60
SHOWN = 5  # jobs named in the final line; the log names each one


class SlurmJobLost(RuntimeError):
    """A SLURM job of the sweep ended without a result: cancelled, failed outside Python, or lost."""


@dataclass
class UnfinishedJob(JobReturn):
    """A failed job whose `return_value` is None instead of its error (see the module's docstring);
    the error is in `error`."""

    @property
    def return_value(self) -> Any:
        return self._return_value if self.status == JobStatus.COMPLETED else None

    @return_value.setter
    def return_value(self, value: Any) -> None:
        self._return_value = value

    @property
    def error(self) -> BaseException | None:
        return self._return_value if isinstance(self._return_value, BaseException) else None


class UnfinishedReport(Callback):
    """Added to the multirun's callbacks by the launcher at its first unfinished job: once the others
    have run (the summary), exit with status 1 and one line naming the jobs."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = sweep_dir
        self.jobs: dict[str, str] = {}  # SLURM id: "SLURM id (job folder or overrides)"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.jobs:
            return
        jobs = [self.jobs[job_id] for job_id in sorted(self.jobs, key=_id_order)]
        shown = "; ".join(jobs[:SHOWN])
        if len(self.jobs) > SHOWN:
            shown += f"; and {len(self.jobs) - SHOWN} more"
        print(
            f"error: {len(self.jobs)} SLURM job(s) ended without a result (cancelled, failed or lost): "
            f"{shown}; run the same command with hydra.sweep.dir={self.sweep_dir} to resume them",
            file=sys.stderr,
        )
        sys.exit(1)


def wait(launcher: Any, jobs: Sequence[Any], job_overrides: list[list[str]]) -> list[JobReturn]:
    """Every job's JobReturn, in order, once each has a result or is known to have ended without one."""
    return [returns[0] for returns in wait_groups(launcher, jobs, [[o] for o in job_overrides])]


def wait_groups(launcher: Any, jobs: Sequence[Any], members: list[list[list[str]]]) -> list[list[JobReturn]]:
    """For each job, the JobReturns of the configs it runs (`members[i]`: their overrides), once each job
    has a result or is known to have ended without one. A job's result is one JobReturn, or a list of
    them, one per member (a fused group)."""
    from sweeper import signals

    log.info("SLURM job(s) %s: waiting for %d job(s)", _array_ids(jobs), len(jobs))
    returns: dict[int, list[JobReturn]] = {}
    unlisted_since: dict[int, float] = {}
    squeue_failing = False
    while True:
        queued = _queued(jobs)
        if queued is None and not squeue_failing:
            log.warning("squeue failed: waiting for the SLURM controller to answer (jobs keep running)")
        squeue_failing = queued is None
        now = time.monotonic()
        for i, job in enumerate(jobs):
            if i in returns:
                continue
            if _has_result(job):
                returns[i] = _results(launcher, job, members[i])
            elif queued is None or job.job_id in queued:
                unlisted_since.pop(i, None)
            elif now - unlisted_since.setdefault(i, now) >= launcher.lost_after_s:
                returns[i] = _lost(launcher, job, members[i])
        if len(returns) == len(jobs):
            return [returns[i] for i in range(len(jobs))]
        try:
            signals.check()  # Ctrl-C in Hydra's process (sweeper's cli turns it into a request)
        except signals.Interrupted:
            left = [job.job_id for i, job in enumerate(jobs) if i not in returns]
            log.warning(
                "stopped waiting: the SLURM job(s) %s go on (scancel %s stops them); running the same "
                "command with hydra.sweep.dir=%s collects their results",
                " ".join(left),
                _array_ids(jobs),
                launcher.config.hydra.sweep.dir,
            )
            raise
        time.sleep(launcher.poll_s)


def _id_order(job_id: str) -> tuple[int, ...]:
    """`123_4` as (123, 4), for listing jobs in the array's order."""
    return tuple(int(part) if part.isdigit() else -1 for part in job_id.split("_"))


def _array_ids(jobs: Sequence[Any]) -> str:
    return " ".join(sorted({job.job_id.split("_")[0] for job in jobs}))


def _has_result(job: Any) -> bool:
    folder = job.paths.folder
    with contextlib.suppress(OSError):  # as submitit does: refresh a network file system's view of it
        folder.chmod(folder.stat().st_mode)
    return job.paths.result_pickle.exists()


def _queued(jobs: Sequence[Any]) -> set[str] | None:
    """The ids (`123_4`, or `123` for a single job) of the jobs SLURM lists as pending, running,
    requeued or completing; None where squeue does not answer."""
    out = _ask_slurm(
        "squeue", "--noheader", "--array", "--format=%i", f"--jobs={_array_ids(jobs).replace(' ', ',')}"
    )
    if out is None:
        return None
    if out.returncode != 0:
        # Every job of the query has left the controller's memory (MinJobAge): nothing is queued.
        if "invalid job id" in out.stderr.lower():
            return set()
        log.debug("squeue: %s", out.stderr.strip())
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _results(launcher: Any, job: Any, members: list[list[str]]) -> list[JobReturn]:
    try:
        result = job.results()[0]  # the result file exists: submitit reads it without waiting
    except Exception as error:  # the job raised outside the task (run_job catches the task's errors)
        message = f"SLURM job {job.job_id} failed: {_first_line(error)} (see {job.paths.stderr})"
        log.error("%s", message)
        return _unfinished(launcher, job, [(o, SlurmJobLost(message), None, None) for o in members])
    results = result if isinstance(result, list) else [result]  # a fused group's: one per member
    failed = [
        (i, r) for i, r in enumerate(results) if isinstance(r, JobReturn) and r.status == JobStatus.FAILED
    ]
    if not failed:
        return results  # the JobReturns that run_job made in the job
    # The task raised in the job: a sweep job records its own errors, so this is submitit's or Hydra's,
    # e.g. submitit's "Job not requeued because: timed-out too many times" raised by its USR2 handler
    # after the job checkpointed. Reported at the end, as a lost job is.
    from sweeper.sweep.upstream import failed_job_error

    entries = []
    for i, r in failed:
        error = failed_job_error(r)
        log.error("SLURM job %s failed: %s", job.job_id, _first_line(error))
        output_dir = OmegaConf.select(r.hydra_cfg, "hydra.runtime.output_dir") if r.hydra_cfg else None
        entries.append((members[i], error, output_dir, r))
    for (i, _), unfinished in zip(failed, _unfinished(launcher, job, entries), strict=True):
        results[i] = unfinished
    return results


def _first_line(error: Any) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _lost(launcher: Any, job: Any, members: list[list[str]]) -> list[JobReturn]:
    state = _sacct_state(job.job_id)
    how = f"state {state}" if state else "not in squeue, no state from sacct"
    folders = [_job_folder(launcher, o) for o in members]
    if len(folders) == 1:
        where = f" (job folder {folders[0]})" if folders[0] else ""
    else:  # a fused group
        names = ", ".join(
            Path(f).name if f else " ".join(filter_overrides(o))
            for f, o in zip(folders, members, strict=True)
        )
        where = f" (its {len(members)} configs: {names})"
    message = (
        f"SLURM job {job.job_id} ended without a result ({how}): it was cancelled or lost{where}; "
        f"running the sweep again with hydra.sweep.dir={launcher.config.hydra.sweep.dir} resumes it"
    )
    log.error("%s", message)
    error = SlurmJobLost(message)
    return _unfinished(launcher, job, [(o, error, f, None) for o, f in zip(members, folders, strict=True)])


def _unfinished(
    launcher: Any, job: Any, entries: list[tuple[list[str], BaseException, str | None, JobReturn | None]]
) -> list[JobReturn]:
    """An UnfinishedJob for each (overrides, error, output folder or None, the member's own failed
    JobReturn or None), with the fields of that JobReturn where the job made one; and the job in the
    report at the multirun's end."""
    returns, names = [], []
    for overrides, error, folder, failed in entries:
        folder = folder if folder is not None else _job_folder(launcher, overrides)
        names.append(Path(folder).name if folder else " ".join(filter_overrides(overrides)))
        # Without the job's own JobReturn, its configs and cwd are not known here.
        known = failed or JobReturn(overrides=overrides, task_name=str(launcher.config.hydra.job.name))
        returns.append(
            UnfinishedJob(
                overrides=known.overrides,
                cfg=known.cfg,
                hydra_cfg=known.hydra_cfg,
                working_dir=known.working_dir,
                task_name=known.task_name,
                status=JobStatus.FAILED,
                _return_value=error,
            )
        )
    report = _report(launcher)
    if report is not None:
        shown = ", ".join(name for name in names if name)
        report.jobs[job.job_id] = f"{job.job_id} ({shown})" if shown else job.job_id
    return returns


def _report(launcher: Any) -> UnfinishedReport | None:
    """The multirun's UnfinishedReport, added at the first unfinished job; None where Hydra changed."""
    from sweeper.sweep.upstream import UpstreamChanged, multirun_callbacks

    try:
        callbacks = multirun_callbacks(launcher.hydra_context)
    except UpstreamChanged as error:  # the jobs still fail; only the final line and exit status are lost
        log.warning("%s", error)
        return None
    report = next((c for c in callbacks if isinstance(c, UnfinishedReport)), None)
    if report is None:  # first: so that at the multirun's end (callbacks in reverse) it runs last
        report = UnfinishedReport(str(launcher.config.hydra.sweep.dir))
        callbacks.insert(0, report)
    return report


def _sacct_state(job_id: str) -> str | None:
    """The job's state as accounting has it ("CANCELLED by 0"), or None without accounting."""
    out = _ask_slurm(
        "sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job_id}"
    )
    if out is None or out.returncode != 0:
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _ask_slurm(*command: str) -> subprocess.CompletedProcess | None:
    """`command`'s output, or None where it cannot be run or does not answer in time."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as error:
        log.debug("%s: %s", command[0], error)
        return None


def _job_folder(launcher: Any, overrides: list[str]) -> str | None:
    """The job's output folder, as its `run_job` names it (hydra.sweep.dir / hydra.sweep.subdir)."""
    try:
        config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
        return str(Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir))
    except Exception as error:  # only for the message
        log.debug("job folder of %s: %s", overrides, error)
        return None

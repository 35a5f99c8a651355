"""The fused SLURM launcher's work, imported only when it launches.

In Hydra's process (`plan`, `submit`): every job's config is composed as the fused launcher composes
it; a job that finished before runs here, through the task function, which only reads its result; the
jobs sweeper.train.fused can train are grouped as the fused launcher groups them (equal fuse keys, similar
widths together, at most `max_batch` each; `max_batch: null` leaves one group per fuse key, which the
job splits by its own memory); every other job is a group of its own. Each group is one task of one
SLURM array, submitted through hydra-submitit-launcher's own launch (its executor, sbatch parameters
and log lines), and `_core.wait_groups` waits for them as the SLURM launcher waits for its jobs.

In the job (`run_group`): the group's configs are composed again, with the job's SLURM id as
`hydra.job.id`, and trained by the fused launcher's own code (hydra_plugins/sweeper_fused/_core.py):
per-member locks, records, folders, TensorBoard runs, Hydra JobReturns; halving and population-based
training within the group. A stop signal checkpoints every member; submitit's USR2 handler then
requeues the job, and `scontrol requeue` restarts it: its members resume from their checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, setup_globals

from hydra_plugins.sweeper_fused import _core as fused_core
from sweeper import signals
from sweeper.config import ConfigError
from sweeper.record.writer import finished_metrics
from sweeper.train.plan import Plan, Search, pads_widths
from sweeper.train.plan import plan as plan_groups

from . import _core

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """The sweep's jobs as the launcher submits them: `groups` of job positions, one SLURM task each,
    and the positions of the jobs that `finished` before."""

    jobs: list[fused_core.FusedJob]
    groups: list[list[int]]
    finished: list[int]


def plan(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Submission:
    """Compose the jobs and plan them into SLURM tasks (sweeper.train.plan, as the fused launcher plans
    its programs); raise ConfigError, before any work, where they cannot train as asked."""
    setup_globals()
    settings = launcher.settings
    gpus = _gpus_per_job(launcher.params)
    if settings.devices is not None and gpus and settings.devices > gpus:
        raise ConfigError(
            f"hydra.launcher.devices must be at most the {gpus} GPU(s) each SLURM job gets "
            f"(hydra.launcher.gpus_per_node), got {settings.devices}"
        )
    # widths=auto decided here, for the nodes the jobs get, so that each job trains as planned.
    settings.widths = "pad" if pads_widths(settings.widths, accelerator=gpus > 0) else "group"
    jobs = [
        fused_core.compose_job(launcher, list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)
    ]
    finished = [
        i for i, job in enumerate(jobs) if finished_metrics(job.output_dir, warn=log.warning) is not None
    ]
    fusable = [i for i, job in enumerate(jobs) if i not in finished and fused_core.is_fusable(job)]
    planned = _plan_tasks(launcher, [jobs[i].task_cfg for i in fusable])
    groups = [[fusable[i] for i in g.members] for g in planned.groups]
    if planned.search.halving and len(groups) > 1:
        log.info("halving ranks the members of each of the %d SLURM jobs on their own", len(groups))
    taken = set(finished) | set(fusable)
    groups += [[i] for i in range(len(jobs)) if i not in taken]  # other apps, mode=eval: one job each
    log.info(
        "Launching %d jobs as %d SLURM job(s): %d in fused groups, %d alone, %d finished before",
        len(jobs),
        len(groups),
        len(fusable),
        len(jobs) - len(fusable) - len(finished),
        len(finished),
    )
    return Submission(jobs, groups, finished)


def _plan_tasks(launcher: Any, cfgs: list[Any]) -> Plan:
    """The fusable configs in groups of `per_job` (each job a slot pool of max_batch rows, whatever their
    widths), else `max_batch` (one program each); null: all of a fuse key, which the job splits by its
    own memory.
    Each job plans its own programs from its group; memory is checked there, on its node."""
    settings = launcher.settings
    search = Search.of(settings, cfgs[0], launcher.config.hydra.sweep.dir) if cfgs else Search()
    per_job = launcher.per_job or settings.max_batch or max(len(cfgs), 1)
    pooled = bool(launcher.per_job and settings.max_batch and launcher.per_job > settings.max_batch)
    search.check_one_program(len(cfgs), 1, pooled=pooled)
    pad = settings.widths == "pad" or pooled  # a job's slot pool buckets widths itself, on its node
    return plan_groups(
        cfgs, pad_widths=pad, max_batch=per_job, search=search, pools=False, check_memory=False
    )


def _gpus_per_job(params: dict[str, Any]) -> int:
    """The GPUs each SLURM job asks for (gpus_per_node, else gpus_per_task times tasks), 0 if none."""
    return int(params.get("gpus_per_node") or 0) or int(params.get("gpus_per_task") or 0) * int(
        params.get("tasks_per_node") or 1
    )


def submit(
    launcher: Any, planned: Submission, map_array: Any, fn: Any, job_args: list[tuple]
) -> list[JobReturn]:
    """Submit each group as one task of one array (`fn`: the launcher; its `__call__` takes the group's
    job arguments as upstream made them), run the finished jobs here, and wait for the groups."""
    returns: list[JobReturn | None] = [None] * len(job_args)
    submitted = map_array(fn, [[job_args[i] for i in g] for g in planned.groups]) if planned.groups else []
    for i in planned.finished:
        returns[i] = fused_core.run_task(launcher, planned.jobs[i], launcher.task_function)
    members = [[list(job_args[i][0]) for i in g] for g in planned.groups]
    waited = _core.wait_groups(launcher, submitted, members)
    for group, group_returns in zip(planned.groups, waited, strict=True):
        for i, job_return in zip(group, group_returns, strict=True):
            returns[i] = job_return
    return returns


def run_group(launcher: Any, job_args: list[tuple]) -> list[JobReturn]:
    """In the SLURM job: train the group's jobs with the fused launcher's code; their JobReturns."""
    import submitit

    Singleton.set_state(job_args[0][4])  # the same for every job of the sweep
    setup_globals()
    job_id = submitit.JobEnvironment().job_id
    jobs = [fused_core.compose_job(launcher, list(o), idx, job_id) for o, _key, idx, _id, _state in job_args]
    with signals.graceful_stop():
        return fused_core.launch_jobs(launcher, jobs)

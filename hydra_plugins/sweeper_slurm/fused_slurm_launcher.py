"""`hydra/launcher=fused_slurm`: fused groups of configs as SLURM jobs, one vmapped program each.

    python run.py -m sweep=article hydra/launcher=fused_slurm hydra.launcher.max_batch=9 \
        hydra.launcher.partition=<yours>

The fused launcher (hydra_plugins/sweeper_fused) trains a sweep's configs as few vmapped programs in
Hydra's own process; this one hands each program's group of up to `max_batch` configs to SLURM as one
task of one array, with every key of `hydra/launcher=slurm` (sbatch parameters, requeue on USR2, the
wait that never hangs on a lost job) and of `hydra/launcher=fused` (halving, PBT, devices). Each
config still gets its own folder, record, TensorBoard run, summary row and JobReturn. The work is in
`_fused.py`, imported only when launching (see slurm_launcher.py for why).
"""

# No `from __future__ import annotations` (see config.py).
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from hydra.core.utils import JobReturn

from .slurm_launcher import SlurmLauncher

if SlurmLauncher is not None:  # without hydra-submitit-launcher it defines nothing, silently
    from hydra_plugins.sweeper_fused.config import FusedLauncherConf, fused_settings

    from .slurm_launcher import SweeperSlurmLauncher

    FUSED_KEYS = {f.name for f in fields(FusedLauncherConf)} - {"_target_"}

    class SweeperFusedSlurmLauncher(SweeperSlurmLauncher):
        """The SLURM launcher's keys, and the fused launcher's (`max_batch`, `widths`, `halving`,
        `keep`, `rungs`, `pbt`, `devices`), which stay out of sbatch's parameters."""

        def __init__(self, per_job: int | None = None, **params: Any) -> None:
            self.settings = fused_settings(**{k: params.pop(k) for k in FUSED_KEYS if k in params})
            if per_job is not None and per_job < 1:
                from sweeper.config import ConfigError

                raise ConfigError(f"hydra.launcher.per_job must be >= 1 or null (max_batch), got {per_job}")
            self.per_job = per_job
            super().__init__(**params)
            self.device_data: dict = {}  # datasets on the device, within one SLURM job

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            """Upstream's launch (its executor and log lines), submitting fused groups (`_fused.submit`)."""
            from sweeper.sweep.upstream import submitit_launch_submits_with

            from . import _fused

            planned = _fused.plan(self, job_overrides, initial_job_idx)  # ConfigError before any work

            def submit(map_array: Any, fn: Any, job_args: list[tuple]) -> list[JobReturn]:
                return _fused.submit(self, planned, map_array, fn, job_args)

            with submitit_launch_submits_with(submit):
                return SlurmLauncher.launch(self, job_overrides, initial_job_idx)

        def __call__(self, job_args: list[tuple]) -> list[JobReturn]:  # type: ignore[override]
            """In the SLURM job: the group's jobs, trained fused (`job_args`: upstream's arguments of
            each job); submitit's `checkpoint` resubmits the same call."""
            from . import _fused

            return _fused.run_group(self, job_args)

"""`hydra/launcher=slurm`: Hydra's submitit SLURM launcher, except that it never hangs on a lost job.

    python run.py -m sweep=article hydra/launcher=slurm hydra.launcher.partition=<yours>

Hydra's own launcher submits the sweep as one array and then waits on each job's `results()`. Where a
job ends without a result (`scancel`, a node failure) submitit asks `sacct`: without accounting it waits
forever, with accounting it raises, and the multirun stops before its summary. This launcher runs
Hydra's own `launch` (the same executor, sbatch parameters and array) and replaces only that wait
(`_core.wait`, through `sweeper.sweep.upstream.submitit_launch_submits_with`): a job that SLURM no
longer lists and that left no result becomes a failed job with a message naming it, the multirun goes on
to its end (the summary shows the job interrupted or unfinished), and the process then exits 1 with one
line saying which jobs a rerun of the sweep resumes. Each job runs upstream's `__call__`, and submitit's
USR2 handler requeues it through upstream's `checkpoint`.

The work is in `_core.py`, imported only when launching: Hydra imports this module on every app's
start, so it imports nothing but Hydra and the submitit plugin's launcher module (which imports
submitit only when it launches). Without hydra-submitit-launcher it defines nothing, silently.
"""

# No `from __future__ import annotations` (see config.py).
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # no hydra-submitit-launcher: no SLURM launcher either
    SlurmLauncher = None

if SlurmLauncher is not None:

    class SweeperSlurmLauncher(SlurmLauncher):
        """Hydra's `SlurmLauncher` with its own wait for the array (see the module's docstring)."""

        def __init__(self, poll_s: float = 2.0, lost_after_s: float = 15.0, **params: Any) -> None:
            if not poll_s > 0 or not lost_after_s >= 0:
                from sweeper.config import ConfigError

                raise ConfigError(
                    "hydra.launcher.poll_s must be > 0 and hydra.launcher.lost_after_s >= 0, "
                    f"got {poll_s} and {lost_after_s}"
                )
            super().__init__(**params)  # these become sbatch's parameters: ours are not among them
            self.poll_s, self.lost_after_s = float(poll_s), float(lost_after_s)

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            """Upstream's launch, waiting for the array with `_core.wait` instead of each job's results."""
            from sweeper.sweep.upstream import submitit_launch_submits_with

            from . import _core

            overrides = [list(o) for o in job_overrides]

            def submit(map_array: Any, fn: Any, job_args: list[tuple]) -> list[JobReturn]:
                return _core.wait(self, map_array(fn, *zip(*job_args, strict=True)), overrides)

            with submitit_launch_submits_with(submit):
                return super().launch(job_overrides, initial_job_idx)

"""The SLURM launchers' settings (`hydra.launcher.*`) in Hydra's ConfigStore.

`hydra/launcher=sweeper_slurm`: every key of Hydra's `submitit_slurm` launcher (hydra_submitit_launcher's
SlurmQueueConf), plus how the launcher waits for the array (`poll_s`, `lost_after_s`);
`conf/hydra/launcher/slurm.yaml` extends it. `hydra/launcher=sweeper_fused_slurm`: those keys and the
fused launcher's (hydra_plugins/sweeper_fused/config.py); `conf/hydra/launcher/fused_slurm.yaml`.
Hydra imports every plugin module on every app's start: this one imports nothing but Hydra and that
plugin's config (no submitit), and where hydra-submitit-launcher is not installed (sweeper's `scale`
extra) it registers nothing, silently.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from hydra_plugins.sweeper_fused.config import FusedLauncherConf

try:
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
except ImportError:  # no hydra-submitit-launcher: no SLURM launcher either
    SlurmQueueConf = None

if SlurmQueueConf is not None:

    @dataclass
    class SweeperSlurmConf(SlurmQueueConf):
        _target_: str = "hydra_plugins.sweeper_slurm.slurm_launcher.SweeperSlurmLauncher"
        # Seconds between looks at the array: result files, and `squeue` for the jobs still queued.
        poll_s: float = 2.0
        # A job that SLURM no longer lists and that wrote no result within this many seconds (time for
        # a shared file system to show the file) was cancelled or lost: it becomes a failed job.
        lost_after_s: float = 15.0

    ConfigStore.instance().store(
        group="hydra/launcher", name="sweeper_slurm", node=SweeperSlurmConf, provider="sweeper"
    )

    @dataclass
    class SweeperFusedSlurmConf(SweeperSlurmConf, FusedLauncherConf):
        """A fused group of up to `max_batch` configs per SLURM job (see fused_slurm_launcher.py)."""

        _target_: str = "hydra_plugins.sweeper_slurm.fused_slurm_launcher.SweeperFusedSlurmLauncher"
        # Configs handed to each SLURM job; null: max_batch (one program each). More than max_batch:
        # the job trains them as a slot pool of max_batch rows that the waiting ones keep full.
        per_job: int | None = None

    ConfigStore.instance().store(
        group="hydra/launcher", name="sweeper_fused_slurm", node=SweeperFusedSlurmConf, provider="sweeper"
    )

"""One launch of two jobs (hidden=16, hidden=32) through a SLURM launcher, for tests/slurm/fake.py.

    python tests/slurm/launch.py MODE SWEEP_DIR OUT_JSON [CONFIG_OVERRIDE ...]

The config is the real `conf/config.yaml` with `hydra/launcher=slurm` (`fused_slurm` for MODE fused)
and the overrides. MODE:
  sweeper          sweeper's SweeperSlurmLauncher, as `hydra.launcher._target_` names it
  fused            sweeper's SweeperFusedSlurmLauncher (hydra/launcher=fused_slurm)
  upstream         hydra_submitit_launcher's own SlurmLauncher with the same parameters
  upstream-waited  that one inside sweeper.sweep.upstream.submitit_launch_submits_with, whose submit submits
                   the jobs and answers each job's SLURM id as its result
OUT_JSON gets the launch's returns (or its error), the jobs the wait was given, and whether submitit's
AutoExecutor is submitit's own again afterwards. sbatch, squeue and sacct come from PATH.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

JOBS = [["hidden=16"], ["hidden=32"]]
ROOT = Path(__file__).resolve().parents[2]
# Parameters of sweeper's wait, which upstream's launcher does not take.
WAIT_KEYS = ("poll_s", "lost_after_s")


def task(cfg):  # never runs: the jobs are only submitted
    raise AssertionError("a fake job ran")


def compose_launcher_config(sweep_dir: str, overrides: list[str], launcher: str = "slurm"):
    """The composed config with `hydra/launcher=<launcher>`, and Hydra's context for a launcher."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import HydraContext

    from sweeper import config

    config.register()
    initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3")
    args = [f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}", *overrides]
    cfg = compose("config", overrides=args, return_hydra_config=True)
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    return cfg, context


def make_launcher(mode: str, cfg):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if mode in ("sweeper", "fused"):
        return instantiate(cfg.hydra.launcher)
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    for key in ("_target_", *WAIT_KEYS):
        params.pop(key)
    return SlurmLauncher(**params)


def main(mode: str, sweep_dir: str, out: str, *overrides: str) -> None:
    import submitit
    from hydra.core.utils import JobReturn, JobStatus

    from sweeper.sweep.upstream import submitit_launch_submits_with

    launcher_name = "fused_slurm" if mode == "fused" else "slurm"
    cfg, context = compose_launcher_config(sweep_dir, list(overrides), launcher_name)
    launcher = make_launcher(mode, cfg)
    launcher.setup(hydra_context=context, task_function=task, config=cfg)
    auto_executor, waited = submitit.AutoExecutor, []

    def submit(map_array, fn, job_args):
        answer["job_args"] = [[len(a), list(a[0]), a[1], a[2]] for a in job_args]  # what run_group reads
        jobs = map_array(fn, *zip(*job_args, strict=True))
        waited.extend(job.job_id for job in jobs)
        return [
            JobReturn(overrides=o, status=JobStatus.COMPLETED, _return_value=j.job_id)
            for o, j in zip(JOBS, jobs, strict=True)
        ]

    answer = {"returns": None, "error": None, "job_args": None}
    try:
        if mode == "upstream-waited":
            with submitit_launch_submits_with(submit):
                returns = launcher.launch(JOBS, initial_job_idx=0)
        else:
            returns = launcher.launch(JOBS, initial_job_idx=0)
        answer["returns"] = [
            {
                "type": type(r).__name__,
                "status": r.status.name,
                "overrides": list(r.overrides),
                "value": None if r.status == JobStatus.FAILED else r.return_value,
                "error": str(getattr(r, "error", None) or ""),
            }
            for r in returns
        ]
    except Exception as error:  # upstream's launcher, when the stand-in sbatch refuses
        answer["error"] = f"{type(error).__name__}: {error}"
    answer["waited"] = waited
    answer["auto_executor_restored"] = submitit.AutoExecutor is auto_executor
    Path(out).write_text(json.dumps(answer))


if __name__ == "__main__":
    main(*sys.argv[1:])

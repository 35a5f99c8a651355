"""`hydra/launcher=fused`: a Hydra launcher that trains a sweep's configs as few vmapped programs.

    python run.py -m hydra/launcher=fused sweep=article              # the 27-config grid
    python run.py -m hydra/launcher=fused sweep=article hydra.launcher.halving=true

It composes every job's config as Hydra's basic launcher does, groups the jobs that differ only in
lr, reg, seed and hidden (equal widths together, or all widths padded to the largest: `hidden`),
splits groups larger than `max_batch`, and trains each group with `sweeper.fused.train_group`. Then
each job goes through Hydra's own `run_job` (its .hydra/ snapshot, callbacks, JobReturn), whose task
returns the objective the group computed. Anything it cannot fuse, such as another task function, a
job with mode=eval, a group of one, or a group whose fused training fails, runs exactly as the basic
launcher runs it. Imports JAX only once there is something to fuse.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeper.config import ConfigError, Mode, fuse_key, validate

log = logging.getLogger(__name__)


@dataclass
class FusedLauncherConf:
    _target_: str = "hydra_plugins.sweeper_fused.FusedLauncher"
    max_batch: int = 32  # most configs in one program; bigger groups are split into chunks
    hidden: str = "auto"  # group: equal widths per program | pad: pad to the widest | auto: by device
    halving: bool = False  # successive halving inside each program
    keep: float = 0.5  # fraction kept at each rung
    rungs: list[int] | None = None  # steps of the rungs; null: max_steps * keep**2 and max_steps * keep


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="sweeper")


def default_rungs(max_steps: int, keep: float) -> tuple[int, ...]:
    """Two rungs spaced as successive halving spaces them: at max_steps * keep**2 and max_steps * keep."""
    return tuple(sorted({round(max_steps * keep**i) for i in (2, 1)} - {0, max_steps}))


def chunks(items: list, max_size: int) -> list[list]:
    """`items` cut into the fewest chunks of at most `max_size`, their sizes as equal as possible."""
    count = math.ceil(len(items) / max_size)
    size, extra = divmod(len(items), count)
    out, begin = [], 0
    for i in range(count):
        end = begin + size + (i < extra)
        out.append(items[begin:end])
        begin = end
    return out


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    config: DictConfig  # with its hydra node, as run_job takes it
    output_dir: Path
    task_cfg: DictConfig | None = None  # set when the job can be fused
    key: str = ""
    log_file: Path | None = None
    objective: float | None = None  # set once its group has trained it


class FusedLauncher(Launcher):
    def __init__(
        self,
        max_batch: int = 32,
        hidden: str = "auto",
        halving: bool = False,
        keep: float = 0.5,
        rungs: list[int] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"hydra.launcher.max_batch must be >= 1, got {max_batch}")
        if hidden not in ("auto", "group", "pad"):
            raise ConfigError(f"hydra.launcher.hidden must be auto, group or pad, got {hidden!r}")
        if not 0 < keep < 1:
            raise ConfigError(f"hydra.launcher.keep must be in (0, 1), got {keep}")
        if rungs is not None and any(int(r) < 1 for r in rungs):
            raise ConfigError(f"hydra.launcher.rungs must be steps >= 1, got {list(rungs)}")
        self.max_batch, self.hidden, self.halving, self.keep = max_batch, hidden, halving, keep
        self.rungs = None if rungs is None else tuple(sorted({int(r) for r in rungs}))
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.device_data: dict = {}  # datasets on the device, shared by every group of this process

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._compose(list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
        fusable = getattr(self.task_function, "sweeper_fusable", False)
        groups = self._groups(jobs) if fusable else []
        if self.halving and any(j.task_cfg.data.val_size == 0 for group in groups for j in group):
            raise ConfigError("hydra.launcher.halving ranks jobs by val accuracy: it needs data.val_size > 0")
        log.info(
            "Launching %d jobs: %d fused in %d program(s), %d one by one",
            len(jobs),
            sum(map(len, groups)),
            len(groups),
            len(jobs) - sum(map(len, groups)),
        )
        for group in groups:
            self._train(group)
        returns = []
        for job in jobs:
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            task = self.task_function
            if job.objective is not None:
                task = lambda _cfg, value=job.objective: value  # noqa: E731 - trained with its group
            returns.append(
                run_job(
                    hydra_context=self.hydra_context,
                    task_function=task,
                    config=job.config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _compose(self, overrides: list[str], idx: int) -> _Job:
        """The job's config as the basic launcher composes it, its folder, and whether it can be fused."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        HydraConfig.instance().set_config(config)
        output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(output_dir.absolute())
        job = _Job(idx, overrides, config, output_dir)
        try:
            task_cfg = copy.deepcopy(config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            validate(task_cfg)
            if Mode(task_cfg.mode) is not Mode.train or _finished(output_dir):
                return job  # evaluations and finished jobs go through the task function
            OmegaConf.update(task_cfg, "resume", True)  # as every sweep job does
            cfg_dict = OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True)
        except Exception:  # not sweeper's config, or invalid: the task function reports it
            return job
        job.task_cfg = task_cfg
        job.key = fuse_key(cfg_dict, pad_hidden=self._pad_hidden())
        log_file = OmegaConf.select(config, "hydra.job_logging.handlers.file.filename", default=None)
        job.log_file = Path(log_file) if log_file else None
        return job

    def _pad_hidden(self) -> bool:
        if self.hidden == "auto":
            import jax

            # Measured on a 2-core CPU: grouping by width beats padding (padding costs about the extra
            # arithmetic); on an accelerator a single small program is dispatch-bound and padding wins.
            self.hidden = "group" if jax.default_backend() == "cpu" else "pad"
            log.info("fused launcher: hidden=%s on %s", self.hidden, jax.default_backend())
        return self.hidden == "pad"

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        by_key: dict[str, list[_Job]] = {}
        for job in jobs:
            if job.task_cfg is not None:
                by_key.setdefault(job.key, []).append(job)
        groups = []
        for members in by_key.values():
            members = sorted(members, key=lambda j: j.task_cfg.hidden)  # similar widths share a chunk
            groups += [chunk for chunk in chunks(members, self.max_batch) if len(chunk) > 1]
        return groups

    def _train(self, group: list[_Job]) -> None:
        from sweeper import cli, fused, train

        cfg = group[0].task_cfg
        if cfg.jax_cache_dir:
            train.enable_compilation_cache(cfg.jax_cache_dir)
        halving = None
        if self.halving:
            halving = fused.Halving(self.rungs or default_rungs(cfg.max_steps, self.keep), self.keep)
        fmt = OmegaConf.select(group[0].config, "hydra.job_logging.formatters.simple.format", default=None)
        try:
            metrics = fused.train_group(
                [j.task_cfg for j in group],
                [j.output_dir for j in group],
                halving=halving,
                log_files=[j.log_file for j in group],
                log_format=fmt or fused.LOG_FORMAT,
                device_data=self.device_data,
            )
        except Exception as error:  # the jobs then run one by one, each reporting its own error
            log.warning(
                "fused training of %d jobs failed (%s): running them one by one",
                len(group),
                cli.one_line(error),
            )
            if not isinstance(error, cli.user_errors()):  # a bug: keep its traceback
                log.warning("fused training failed", exc_info=True)
            return
        for job, job_metrics in zip(group, metrics, strict=True):
            job.objective = job_metrics["objective"]


def _finished(output_dir: Path) -> bool:
    from sweeper.cli import finished_metrics

    return finished_metrics(output_dir) is not None

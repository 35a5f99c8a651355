"""The fused launcher's work, imported only when it launches.

It composes every job's config as Hydra's basic launcher does and asks sweeper.train.fused which jobs it can
train: valid sweeper configs in train mode that have not finished. Those are locked (sweeper.sweep.locks:
another process on the same sweep folder passes them over), their `.hydra/` record is written at once
(so that a summary of a killed sweep lists them), and sweeper.train.fused trains them as fused programs.
As each one finishes, it goes through Hydra's own `run_job` (its record, the callbacks' progress
lines, its JobReturn), with a task that returns the objective its program computed. Every other job
runs through the task function, as the basic launcher runs it: another app's jobs, mode=eval,
finished jobs, a group of one, or jobs whose fused training raised.
"""

# No `from __future__ import annotations` (see config.py).
import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeper import signals
from sweeper.errors import one_line, user_errors
from sweeper.sweep.locks import JobLock
from sweeper.train import fused
from sweeper.train.devices import local_devices
from sweeper.train.plan import Plan, Search, fuse_key, one_at_a_time, pads_widths, plan, stream_plan
from sweeper.train.run import enable_compilation_cache

log = logging.getLogger(__name__)

POOL_WIDTHS = {True: "widths padded into one program", False: "a program per width"}


@dataclass
class FusedJob:
    """One job of the sweep as this launcher handles it."""

    idx: int
    overrides: list[str]
    config: DictConfig  # with its hydra node, as run_job takes it
    output_dir: Path
    task_cfg: DictConfig | None = None  # without the hydra node; set when sweeper.train.fused accepts it
    cfg_dict: dict[str, Any] | None = None
    log_file: Path | None = None
    result: JobReturn | None = None
    lock: Any = field(default=None, repr=False)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    setup_globals()
    jobs = [compose_job(launcher, list(o), initial_job_idx + i) for i, o in enumerate(job_overrides)]
    return launch_jobs(launcher, jobs)


def launch_jobs(launcher: Any, jobs: list[FusedJob]) -> list[JobReturn]:
    """Train the fusable `jobs` as fused programs, run the others through the task function; each
    one's JobReturn, in order. `launcher` has the fused launcher's settings and Hydra context."""
    config = launcher.config
    devices = local_devices(launcher.settings.devices)  # more than the machine has: an error before any work
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        fusable = [job for job in jobs if _accept(job, held)]
        planned = sweep_plan(launcher, [j.task_cfg for j in fusable], devices).without_singles()
        planned.check_memory()  # the programs it trains; a single run checks its own
        fused_idx = {fusable[i].idx for g in planned.groups for i in g.members}
        for job in fusable:
            if job.idx not in fused_idx:
                job.lock.release()
        pools = f" (slot pools: {len(planned.pools)})" if planned.pools else ""
        log.info(
            "Launching %d jobs: %d fused in %d program(s)%s, %d one by one",
            len(jobs),
            len(fused_idx),
            len(planned.groups),
            pools,
            len(jobs) - len(fused_idx),
        )
        if fused_idx:
            _train(launcher, fusable, planned)
    for job in jobs:
        if job.result is None:  # not fused, or its fused training failed
            job.result = run_task(launcher, job, launcher.task_function)
    return [job.result for job in jobs]


def sweep_plan(launcher: Any, cfgs: list[DictConfig], devices: list) -> Plan:
    """The plan of the fused launcher's `cfgs` (its settings; widths=auto resolved for `devices`); its
    memory is checked once the programs it trains are known (`Plan.check_memory`)."""
    settings, sweep_dir = launcher.settings, launcher.config.hydra.sweep.dir
    search = Search.of(settings, cfgs[0], sweep_dir) if cfgs else Search()
    pad = pads_widths(settings.widths, accelerator=devices[0].platform != "cpu")
    if settings.widths == "auto":
        log.info("fused launcher: widths=%s on %s", "pad" if pad else "group", devices[0].platform)
    cpu = devices[0].platform == "cpu"
    if cfgs and cpu and settings.max_batch is None and not search.controllers and one_at_a_time(cfgs[0]):
        log.info(
            "fused launcher: a convolutional model trains one config at a time on cpu, where that is faster "
            "(docs/model.md); hydra.launcher.max_batch=N fuses N anyway"
        )
    return plan(
        cfgs,
        pad_widths=pad,
        max_batch=settings.max_batch,
        search=search,
        devices=len(devices),
        check_memory=False,
        accelerator=devices[0].platform != "cpu",
    )


def launch_stream(
    launcher: Any,
    next_overrides: Callable[[], Sequence[str] | None],
    on_return: Callable[[int, JobReturn], None],
    slots: int,
    initial_job_idx: int,
) -> list[JobReturn]:
    """Jobs asked one at a time (`next_overrides()`, None: no more) as the rows of one slot pool of
    `slots` free, widths padded into one program; `on_return(k, JobReturn)` as soon as the k-th job asked
    ends. Jobs the pool cannot take (another app's, finished, another fuse key) run through the task
    function when asked. Every job's JobReturn, in the order asked."""
    setup_globals()
    config = launcher.config
    local_devices(launcher.settings.devices)  # more than the machine has: an error before any work
    check_stream(launcher)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        stream = Stream(launcher, next_overrides, on_return, initial_job_idx, held)
        first = stream.next_configs(slots)
        if first:
            stream.train(first, slots)
        for job in [j for j in stream.pooled if j.result is None]:  # its fused training failed
            stream.returned(job, launcher.task_function)
    return [job.result for job in stream.jobs]


class Stream:
    """The jobs of a stream as they are asked: composed, taken into the pool when they share its fuse
    key (and locked), else run through the task function at once."""

    def __init__(
        self, launcher: Any, next_overrides: Callable, on_return: Callable, first_idx: int, held: Any
    ):
        self.launcher, self.next_overrides, self.on_return = launcher, next_overrides, on_return
        self.first_idx, self.held = first_idx, held
        self.jobs: list[FusedJob] = []
        self.pooled: list[FusedJob] = []
        self.key: str | None = None  # the pool's fuse key, once its first job is in

    def returned(self, job: FusedJob, task: Any) -> None:
        job.result = run_task(self.launcher, job, task)
        self.on_return(job.idx - self.first_idx, job.result)

    def next_configs(self, free: int) -> list[tuple[Any, Path, Path | None]]:
        """Up to `free` jobs the pool takes, as (task config, folder, log file); the others asked
        meanwhile run through the task function."""
        out = []
        while len(out) < free and (overrides := self.next_overrides()) is not None:
            job = compose_job(self.launcher, list(overrides), self.first_idx + len(self.jobs))
            self.jobs.append(job)
            if _accept(job, self.held) and self.key in (None, fused_key(job)):
                self.key = fused_key(job)
                _write_record(job)
                self.pooled.append(job)
                out.append((job.task_cfg, job.output_dir, job.log_file))
                continue
            if job.lock is not None:  # fusable, but not with the pool's jobs
                job.lock.release()
            self.returned(job, self.launcher.task_function)
        return out

    def train(self, first: list[tuple[Any, Path, Path | None]], slots: int) -> None:
        settings, config = self.launcher.settings, self.launcher.config
        search = Search.of(settings, first[0][0], config.hydra.sweep.dir)
        prefetched = [first]

        def source(free: int) -> list[tuple[Any, Path, Path | None]]:
            return prefetched.pop() if prefetched else self.next_configs(free)

        def ended(i: int, metrics: dict[str, Any]) -> None:
            _finish(self.launcher, self.pooled[i], metrics)
            self.on_return(self.pooled[i].idx - self.first_idx, self.pooled[i].result)

        devices = local_devices(settings.devices)
        pad = pads_widths(settings.widths, accelerator=devices[0].platform != "cpu")
        log.info("slot pool of %d rows on %s: %s", slots, devices[0].platform, POOL_WIDTHS[pad])
        with _fused_training(self.launcher, self.pooled, first[0][0]):
            fused.train_stream(
                source,
                slots=slots,
                search=search,
                log_format=_log_format(config),
                device_data=self.launcher.device_data,
                on_end=ended,
                devices=settings.devices,
                pad_widths=pad,
            )


ROWS_PER_ACCELERATOR = 8  # a slot pool's rows per device where the sweeper leaves it to the launcher


def default_slots(launcher: Any) -> int:
    """A slot pool's rows for these devices: 1 on a CPU (its members' arithmetic runs one after another,
    and a trial asked later is sampled knowing more), else ROWS_PER_ACCELERATOR per device."""
    devices = local_devices(launcher.settings.devices)
    return 1 if devices[0].platform == "cpu" else ROWS_PER_ACCELERATOR * len(devices)


def check_stream(launcher: Any) -> None:
    """Raise ConfigError where the sweep's own config (what every job of a stream starts from) cannot
    train as the settings ask, before any job is asked."""
    config = launcher.config
    sweep_cfg = copy.deepcopy(config)
    with read_write(sweep_cfg), open_dict(sweep_cfg):
        del sweep_cfg["hydra"]
    if not fused.accepts(sweep_cfg, Path(str(config.hydra.sweep.dir)) / ".none"):
        return  # another app's config: its jobs run through the task function
    search = Search.of(launcher.settings, sweep_cfg, config.hydra.sweep.dir)
    stream_plan([sweep_cfg], slots=1, search=search)


def fused_key(job: FusedJob) -> str:
    """The fuse key of a job in a stream's pool (widths padded)."""
    return fuse_key(job.task_cfg, pad=True)


def compose_job(launcher: Any, overrides: list[str], idx: int, job_id: Any = None) -> FusedJob:
    """The job's config as the basic launcher composes it (`hydra.job.id`: `job_id`, else `idx`), and its
    folder."""
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config):
        config.hydra.job.id = idx if job_id is None else job_id
        config.hydra.job.num = idx
    HydraConfig.instance().set_config(config)
    output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(output_dir.absolute())
    log_file = OmegaConf.select(config, "hydra.job_logging.handlers.file.filename", default=None)
    return FusedJob(idx, overrides, config, output_dir, log_file=Path(log_file) if log_file else None)


def is_fusable(job: FusedJob) -> bool:
    """Whether sweeper.train.fused can train `job` (then its task config and config dict are set)."""
    task_cfg = copy.deepcopy(job.config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    if not fused.accepts(task_cfg, job.output_dir):
        return False
    cfg_dict = OmegaConf.to_container(task_cfg, resolve=True, enum_to_str=True)
    OmegaConf.update(task_cfg, "resume", True)  # as every sweep job does
    job.task_cfg, job.cfg_dict = task_cfg, cfg_dict
    return True


def _accept(job: FusedJob, held: contextlib.ExitStack) -> bool:
    """Whether sweeper.train.fused takes `job`; then it is locked for this process until it ends."""
    if not is_fusable(job):
        return False
    lock = JobLock(job.output_dir)
    if not lock.acquire():  # another process trains it; the task function will say so and skip it
        job.task_cfg = job.cfg_dict = None
        return False
    held.callback(lock.release)
    job.lock = lock
    return True


def _write_record(job: FusedJob) -> None:
    """The job's `.hydra/` record now, as run_job writes it, so that the sweep's summary lists it while it
    trains and its hydra.yaml says which job trains it (run_job rewrites them when it ends)."""
    subdir = job.config.hydra.output_subdir
    if subdir is None:
        return
    folder = job.output_dir / str(subdir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(job.task_cfg))
    (folder / "overrides.yaml").write_text(OmegaConf.to_yaml(job.config.hydra.overrides.task))
    (folder / "hydra.yaml").write_text(OmegaConf.to_yaml({"hydra": job.config.hydra}))


def _train(launcher: Any, fusable: list[FusedJob], planned: Plan) -> None:
    """Train the planned groups of the `fusable` jobs (the plan's configs, in order)."""
    for group in planned.groups:
        for i in group.members:
            _write_record(fusable[i])
    fused_jobs = [fusable[i] for g in planned.groups for i in g.members]
    with _fused_training(launcher, fused_jobs, fused_jobs[0].task_cfg):
        fused.train_plan(
            planned,
            [j.output_dir for j in fusable],
            log_files=[j.log_file for j in fusable],
            log_format=_log_format(fusable[0].config),
            device_data=launcher.device_data,
            on_end=lambda i, metrics: _finish(launcher, fusable[i], metrics),
        )


@contextlib.contextmanager
def _fused_training(launcher: Any, jobs: list[FusedJob], cfg: Any) -> Iterator[None]:
    """Around the fused training of `jobs` (`cfg`: the first one's task config): its compile cache; a
    stop signal says how to continue; an error leaves the jobs not done yet (their locks released) to
    run one by one, each reporting its own error."""
    config = launcher.config
    if cfg.jax_cache_dir:
        enable_compilation_cache(cfg.jax_cache_dir)
    try:
        yield
    except signals.Interrupted as stopped:
        stopped.resume_hint = (
            f"run the same command with hydra.sweep.dir={config.hydra.sweep.dir} to continue"
        )
        raise
    except Exception as error:
        left = [j for j in jobs if j.result is None]
        log.warning("fused training failed (%s): running %d job(s) one by one", one_line(error), len(left))
        if not isinstance(error, user_errors()):  # a bug: keep its traceback
            log.warning("fused training failed", exc_info=True)
        for job in left:
            job.lock.release()
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)


def _finish(launcher: Any, job: FusedJob, metrics: dict[str, Any]) -> None:
    """A job whose fused training ended: unlocked, through run_job with the objective it reached."""
    job.lock.release()
    job.result = run_task(launcher, job, lambda _cfg, value=metrics["objective"]: value)


def _log_format(config: DictConfig) -> str:
    """The members' log line format: the app's job log format, else Hydra's."""
    return OmegaConf.select(config, "hydra.job_logging.formatters.simple.format", default=None) or (
        fused.LOG_FORMAT
    )


def run_task(launcher: Any, job: FusedJob, task: Any) -> JobReturn:
    """The job through Hydra's own run_job: its record, the callbacks, its JobReturn."""
    log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
    result = run_job(
        hydra_context=launcher.hydra_context,
        task_function=task,
        config=job.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    return result

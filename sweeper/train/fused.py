"""Fused training: many configs as few vmapped programs. What `hydra/launcher=fused` trains with.

    metrics = train_group([cfg_a, cfg_b, ...], [workdir_a, workdir_b, ...], hidden="pad")

The launcher asks `accepts(cfg, workdir)` which jobs to fuse, `plan(...)` how to group them, and
`check_group(...)` whether they can train as asked, before it trains them with `train_group`.

Configs equal in everything but lr, reg, seed and hidden (sweeper.config.fuse_key) share a program:
one jitted scan per segment, `jax.vmap` over the members' stacked states (sweeper.train.program). Widths are
padded to the widest (`hidden="pad"`) or kept in a program each (`"group"`); a program holds at most
`max_batch` members. Each member leaves in its workdir what a single run leaves (sweeper.record.run), so
any member resumes, or goes on alone, from its checkpoints. Importable without Hydra.

Without controllers the programs train one after another, so that members finish (and show up) as
early as possible. Successive halving ranks all members at each rung, and population-based training
ranks and copies them, so with either every program of the same schedule trains in lockstep, in one
engine.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper import config, memory
from sweeper.record.run import Clock, RunRecord
from sweeper.record.writer import read_metrics
from sweeper.status import Status
from sweeper.task import data, train_step
from sweeper.train.controllers import AsyncHalving, Halving, PopulationBasedTraining, ScheduleReplay
from sweeper.train.devices import Placement, local_devices
from sweeper.train.engine import Controller, Engine, Schedule
from sweeper.train.program import Member, Program, new_member
from sweeper.train.pruning import TrialPruning, has_trial
from sweeper.train.run import check_batch_size

log = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


def accepts(cfg: Any, workdir: str | Path) -> dict[str, Any] | None:
    """`cfg` as a plain dict if `train_group` can train this job (a valid sweeper config in train mode
    whose job has not finished), else None: the launcher then leaves it to the task function."""
    try:
        config.validate(cfg)
        if config.Mode(cfg.mode) is not config.Mode.train:
            return None
        cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError):
        return None  # another app's config, or an invalid one: the task function reports it
    metrics = read_metrics(Path(workdir))
    return None if metrics is not None and Status(metrics["status"]).is_result else cfg_dict


def check_group(
    cfgs: list[Any], *, halving: Halving | AsyncHalving | None, pbt: PopulationBasedTraining | None
) -> None:
    """Raise ConfigError, before any work, where `cfgs` cannot train with these controllers."""
    if halving and pbt:
        raise config.ConfigError("hydra.launcher: halving and pbt do not mix, choose one")
    if halving and cfgs and any(not 0 < r < cfg.max_steps for cfg in cfgs for r in halving.rungs):
        steps = cfgs[0].max_steps
        raise config.ConfigError(
            f"hydra.launcher.rungs must be steps in (0, max_steps={steps}), got {list(halving.rungs)}"
        )
    for name, controller in (("halving", halving), ("pbt", pbt)):
        if controller and any(cfg.data.val_size == 0 for cfg in cfgs):
            raise config.ConfigError(
                f"hydra.launcher.{name} ranks jobs by val accuracy: it needs data.val_size > 0"
            )


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


def plan(
    cfg_dicts: list[dict], *, pad_hidden: bool, max_batch: int | None, devices: int = 1
) -> list[list[int]]:
    """Indices of `cfg_dicts` grouped into programs: equal fuse keys, similar widths in the same chunk,
    at most `max_batch` each (None: as many as half the memory of `devices` devices holds, by
    sweeper.memory's estimate)."""
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfg_dicts):
        by_key.setdefault(config.fuse_key(cfg, pad_hidden=pad_hidden), []).append(i)
    groups = []
    for indices in by_key.values():
        indices = sorted(indices, key=lambda i: cfg_dicts[i]["hidden"])
        widest = OmegaConf.create(cfg_dicts[indices[-1]])
        groups += chunks(indices, max_batch or devices * memory.members_that_fit(widest))
    return groups


def member_logger(log_file: Path | None, log_format: str) -> logging.Logger:
    """A member's own logger, writing to its job's log file as a single run's lines go to its log."""
    logger = logging.Logger("sweeper.train.fused")
    if log_file is None:
        logger.parent = log
        return logger
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(log_format))
    logger.addHandler(handler)
    return logger


class _DeviceData:
    """Datasets on the device, one copy per data config and process, with the time the first load took."""

    def __init__(self, cache: dict | None):
        self.cache = {} if cache is None else cache

    def get(self, data_cfg: Any) -> tuple[train_step.DeviceSplits, int, float]:
        key = OmegaConf.to_yaml(data_cfg)
        if key not in self.cache:
            started = time.perf_counter()
            dataset = data.load(data_cfg)
            self.cache[key] = (
                train_step.to_device(dataset),
                len(dataset.train_images),
                time.perf_counter() - started,
            )
        return self.cache[key]


def train_group(
    cfgs: list[Any],
    workdirs: list[str | Path],
    *,
    hidden: str = "pad",
    max_batch: int | None = None,
    halving: Halving | AsyncHalving | None = None,
    pbt: PopulationBasedTraining | None = None,
    log_files: list[Path | None] | None = None,
    log_format: str = LOG_FORMAT,
    device_data: dict | None = None,
    on_end: Callable[[int, dict[str, Any]], None] | None = None,
    devices: int | None = None,
) -> list[dict[str, Any]]:
    """Train `cfgs` as fused programs, each into its workdir; return each one's metrics.

    `hidden` is "pad" (one program for all widths) or "group" (a program per width); `max_batch` caps a
    program's members (None: by memory, see `plan`). `device_data` keeps datasets on the device across
    calls; `log_files` receive each member's log lines (else they go to this module's logger);
    `on_end(i, metrics)` is called as soon as config i has finished. Each program spreads its members
    over the first `devices` local devices (None: all of them; sweeper.train.devices).
    """
    for cfg in cfgs:
        config.validate(cfg)
    if hidden not in ("pad", "group"):
        raise config.ConfigError(f"hidden must be pad or group, got {hidden!r}")
    check_group(cfgs, halving=halving, pbt=pbt)
    placement = Placement(local_devices(devices))
    files = log_files or [None] * len(cfgs)
    records = [
        RunRecord(cfg, w, member_logger(f, log_format))
        for cfg, w, f in zip(cfgs, workdirs, files, strict=True)
    ]
    index = {record.workdir: i for i, record in enumerate(records)}
    cfg_dicts = [r.cfg_dict for r in records]
    members: list[Member] = []

    def ended(member: Member) -> None:
        if on_end is not None:
            on_end(index[member.record.workdir], member.metrics)

    datasets = _DeviceData(device_data)
    controllers = [c for c in (halving, pbt) if c is not None]
    lockstep = isinstance(halving, Halving) or pbt is not None  # they rank or copy members at one step
    # A fuse key with more configs than max_batch is a slot pool of max_batch rows, unless lockstep.
    pooling = bool(max_batch) and not lockstep
    groups = plan(
        cfg_dicts,
        pad_hidden=hidden == "pad",
        max_batch=len(cfgs) if pooling else max_batch,
        devices=placement.count,
    )
    pools = [g for g in groups if pooling and len(g) > max_batch]
    groups = [g for g in groups if g not in pools]
    try:
        for number, pool in enumerate(pools):
            members += _train_pool(
                number, pool, max_batch, cfgs, records, controllers, datasets, ended, placement
            )
        for cohort in _cohorts(groups, cfgs, together=bool(controllers)):
            members += _train_cohort(cohort, cfgs, records, controllers, datasets, ended, placement)
    finally:
        _close(records)
    return _in_order(members, index, len(cfgs))


def train_stream(
    next_configs: Callable[[int], list[tuple[Any, Path, Path | None]]],
    *,
    slots: int,
    halving: AsyncHalving | None = None,
    log_format: str = LOG_FORMAT,
    device_data: dict | None = None,
    on_end: Callable[[int, dict[str, Any]], None] | None = None,
    devices: int | None = None,
) -> list[dict[str, Any]]:
    """Train configs as one slot pool of `slots` rows, asking `next_configs(free)` for up to `free`
    more (cfg, workdir, log file) whenever rows free, until it returns none; each one's metrics, in
    the order asked. The configs must share a fuse key with widths padded (an Optuna study's trials);
    a wider one widens the program. `on_end(i, metrics)`: as soon as the i-th config asked has finished."""
    if isinstance(halving, Halving):
        raise config.ConfigError(
            "hydra.launcher.halving=true waits for each rung to fill: a stream takes async"
        )
    placement = Placement(local_devices(devices))
    cfgs: list[Any] = []
    records: list[RunRecord] = []
    index: dict[Path, int] = {}

    def more(free: int) -> list[int]:
        new = []
        for cfg, workdir, log_file in next_configs(free):
            config.validate(cfg)
            check_group([cfg], halving=halving, pbt=None)
            index[Path(workdir)] = len(cfgs)
            new.append(len(cfgs))
            cfgs.append(cfg)
            records.append(RunRecord(cfg, workdir, member_logger(log_file, log_format)))
        return new

    def ended(member: Member) -> None:
        if on_end is not None:
            on_end(index[member.record.workdir], member.metrics)

    first = more(slots)
    if not first:
        return []
    controllers = [halving] if halving is not None else []
    try:
        members = _train_pool(
            0, first, slots, cfgs, records, controllers, _DeviceData(device_data), ended, placement, more=more
        )
    finally:
        _close(records)
    return _in_order(members, index, len(cfgs))


def _close(records: list[RunRecord]) -> None:
    for record in records:
        record.close()
        for handler in record.log.handlers:
            handler.close()


def _in_order(members: list[Member], index: dict[Path, int], count: int) -> list[dict[str, Any]]:
    """The members' metrics by config index (`index`: each workdir's)."""
    by_index = {index[m.record.workdir]: m.metrics for m in members}
    return [by_index[i] for i in range(count)]


def _cohorts(groups: list[list[int]], cfgs: list[Any], *, together: bool) -> list[list[list[int]]]:
    """Groups that train in one engine: all of one schedule when `together`, else each on its own."""
    if not together:
        return [[g] for g in groups]
    by_schedule: dict[tuple, list[list[int]]] = {}
    for g in groups:
        cfg = cfgs[g[0]]
        by_schedule.setdefault((cfg.max_steps, cfg.log_every, cfg.checkpoint_every), []).append(g)
    return list(by_schedule.values())


def _train_cohort(
    cohort: list[list[int]],
    cfgs: list[Any],
    records: list[RunRecord],
    controllers: list[Controller],
    device_data: _DeviceData,
    on_end: Callable[[Member], None],
    placement: Placement,
) -> list[Member]:
    """Build a program per group and resume step, and train them all in one engine."""
    started = time.perf_counter()
    programs, members, data_s = [], [], 0.0
    for group in cohort:
        widest = max((cfgs[i] for i in group), key=lambda c: c.hidden)
        memory.check_fits(widest, members=placement.rows(len(group)) // placement.count)  # per device
        splits, num_train, load_s = device_data.get(cfgs[group[0]].data)
        data_s = max(data_s, load_s)
        for i in group:
            records[i].log_config()
        for i in group:
            check_batch_size(cfgs[i], num_train)
        population = any(isinstance(c, PopulationBasedTraining) for c in controllers)
        group_members = [new_member(cfgs[i], records[i], num_train, population=population) for i in group]
        if any(c.one_program for c in controllers) and len({m.start for m in group_members}) > 1:
            # Killed between two members' checkpoints: all go back to the step they all reached.
            upto = min(m.start for m in group_members)
            group_members = [
                new_member(cfgs[i], records[i], num_train, upto, population=population) for i in group
            ]
        # Members resumed from different steps cannot share a scan: each start gets its own program.
        by_start = itertools.groupby(sorted(group_members, key=lambda m: m.start), key=lambda m: m.start)
        for _, part in by_start:
            programs.append(_program(list(part), splits, placement))
        members += group_members
    for m in members:
        m.record.open(m.start, m.order.num_images)
    cfg = cfgs[cohort[0][0]]
    controllers = [ScheduleReplay(), *controllers]
    if any(has_trial(m.cfg) for m in members):
        controllers.append(TrialPruning(members))
    clock = Clock(started, data_s, len(members))
    engine = Engine(programs, Schedule.of(cfg), controllers=controllers, clock=clock, on_end=on_end)
    engine.run()
    log.info(
        "fused training done in %.1f s (compile %.1f s): %s",
        time.perf_counter() - started,
        sum(p.segments.compile_s for p in programs),
        _statuses(members),
    )
    return members


def _statuses(members: list[Member]) -> str:
    """How members ended, counted: `3 ok, 1 pruned`."""
    counts: dict[str, int] = {}
    for m in members:
        counts[m.status.value] = counts.get(m.status.value, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _train_pool(
    number: int,
    group: list[int],
    slots: int,
    cfgs: list[Any],
    records: list[RunRecord],
    controllers: list[Controller],
    device_data: _DeviceData,
    on_end: Callable[[Member], None],
    placement: Placement,
    more: Callable[[int], list[int]] | None = None,
) -> list[Member]:
    """Train `group` (one fuse key) as one program of `slots` rows that the waiting configs keep full:
    as members end, the next ones take their rows at that step, each from its own step 0 (or its
    checkpoint), while the others go on. Once `group` is used up, `more(free)` may add configs to
    `cfgs` and `records` and return their indices (a stream: trials asked as slots free)."""
    started = time.perf_counter()
    widest = max((cfgs[i] for i in group), key=lambda c: c.hidden)
    memory.check_fits(widest, members=placement.rows(slots) // placement.count)  # per device
    splits, num_train, load_s = device_data.get(cfgs[group[0]].data)
    for i in group:
        check_batch_size(cfgs[i], num_train)
    waiting, entered = list(group), []
    program: Program | None = None

    def enter(free: int) -> list[Member]:
        """Up to `free` waiting configs as members, their records opened."""
        if not waiting and more is not None:
            for i in more(free):
                check_batch_size(cfgs[i], num_train)
                waiting.append(i)
        new = []
        while waiting and len(new) < free:
            i = waiting.pop(0)
            records[i].log_config()
            member = new_member(cfgs[i], records[i], num_train)
            member.record.open(member.start, num_train)
            at = 0 if program is None else program.step
            member.record.log.info("in slot pool %d (%d slots) from program step %d", number, slots, at)
            new.append(member)
        entered.extend(new)
        return new

    first = enter(slots)
    program = Program(
        first,
        splits,
        stacked=True,
        placement=placement,
        step=0,
        width=widest.hidden,
        slots=slots,
        pool=number,
    )
    spans = f" on {placement.count} devices" if program.placement is not None else ""
    log.info(
        "slot pool %d: %s through %d slots, width %d%s",
        number,
        f"{len(group)} jobs" if more is None else "trials",
        slots,
        program.width,
        spans,
    )
    clock = Clock(started, load_s, max(len(group), slots))
    engine = Engine(
        [program],
        Schedule.of(cfgs[group[0]]),
        controllers=[ScheduleReplay(), *controllers, TrialPruning(first)],
        clock=clock,
        on_end=on_end,
        refill=enter,
    )
    engine.run()
    log.info(
        "slot pool %d done in %.1f s (compile %.1f s): %d jobs, %d program steps, slot occupancy %.2f: %s",
        number,
        time.perf_counter() - started,
        program.segments.compile_s,
        len(entered),
        program.step,
        program.member_steps / program.slot_steps if program.slot_steps else 1.0,
        _statuses(entered),
    )
    return entered


def _program(members: list[Member], splits: train_step.DeviceSplits, placement: Placement) -> Program:
    program = Program(members, splits, stacked=True, placement=placement)
    spans = f" on {placement.count} devices" if program.placement is not None else ""
    log.info(
        "fused program: %d jobs, width %d%s, from step %d%s",
        len(members),
        program.width,
        " (narrower members padded and masked)" if program.padded else "",
        program.step,
        spans,
    )
    for m in members:
        m.record.log.info(
            "fused with %d jobs in one program (width %d)%s", len(members), program.width, spans
        )
    return program

"""Fused training: many configs as few vmapped programs. What `hydra/launcher=fused` trains with.

    planned = sweeper.train.plan.plan(cfgs, pad_widths=True, max_batch=8)
    metrics = train_plan(planned, [workdir_a, workdir_b, ...])
    metrics = train_group([cfg_a, cfg_b, ...], [workdir_a, workdir_b, ...], widths="pad")  # both at once

A launcher asks `accepts(cfg, workdir)` which jobs to fuse and plans them once (sweeper.train.plan):
configs equal in everything but lr, reg, seed, the optimizer's numeric keys and the model's paddable keys
(hidden: sweeper.config.fuse_key) share a program,
one jitted scan per segment, `jax.vmap` over the members' stacked states (sweeper.train.program).
Each member leaves in its workdir what a single run leaves (sweeper.record), so any member resumes,
or goes on alone, from its checkpoints. Importable without Hydra.

Slot pools train first (sweeper.train.pool), then the programs of fixed members: without a search
one after another, so that members finish (and show up) as early as possible; with halving or
population-based training, every program of one schedule in lockstep, in one engine.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper import checks, config
from sweeper.record.run import Clock, RunRecord
from sweeper.record.writer import finished_metrics
from sweeper.task import data, train_step
from sweeper.train.controllers import AsyncHalving, Halving, PopulationBasedTraining, ScheduleReplay
from sweeper.train.devices import Placement, local_devices
from sweeper.train.engine import Engine, Schedule
from sweeper.train.plan import Group, Plan, Search, check_arrival, pads_widths, plan, stream_plan
from sweeper.train.pool import SlotPool, statuses
from sweeper.train.program import Member, Program, new_member, show_widths
from sweeper.train.pruning import TrialPruning, has_trial
from sweeper.train.run import check_batch_size

log = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format
OnEnd = Callable[[int, dict[str, Any]], None]


def accepts(cfg: Any, workdir: str | Path) -> bool:
    """Whether fused training can train this job: a valid sweeper config in train mode whose job has not
    finished; else the launcher leaves it to the task function."""
    try:
        checks.validate(cfg)
        if config.Mode(cfg.mode) is not config.Mode.train:
            return False
        OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except (OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError):
        return False  # another app's config, or an invalid one: the task function reports it
    return finished_metrics(Path(workdir)) is None


def member_logger(log_file: Path | None, log_format: str) -> logging.Logger:
    """A member's own logger, writing to its job's log file as a single run's lines go to its log."""
    logger = logging.Logger("sweeper.fused")
    if log_file is None:
        logger.parent = log
        return logger
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter(log_format))
    logger.addHandler(handler)
    return logger


class DatasetCache:
    """Datasets on the device, one copy per data config and process, with the time the first load took."""

    def __init__(self, cache: dict | None):
        self.cache = {} if cache is None else cache

    def get(self, data_cfg: Any) -> tuple[train_step.DeviceSplits, float]:
        key = OmegaConf.to_yaml(data_cfg)
        if key not in self.cache:
            started = time.perf_counter()
            splits = train_step.to_device(data.load(data_cfg))
            self.cache[key] = (splits, time.perf_counter() - started)
        return self.cache[key]


class Records:
    """Every config's RunRecord, by position, and the call to make as each member ends."""

    def __init__(self, log_format: str, on_end: OnEnd | None):
        self.records: list[RunRecord] = []
        self.index: dict[Path, int] = {}
        self.log_format, self.on_end = log_format, on_end

    def add(self, cfg: Any, workdir: str | Path, log_file: Path | None) -> int:
        """A record for one more config; its position."""
        self.index[Path(workdir)] = len(self.records)
        self.records.append(RunRecord(cfg, workdir, member_logger(log_file, self.log_format)))
        return len(self.records) - 1

    def ended(self, member: Member) -> None:
        if self.on_end is not None:
            self.on_end(self.index[member.record.workdir], member.metrics)

    def in_order(self, members: list[Member], count: int) -> list[dict[str, Any] | None]:
        """The members' metrics by config position (None where nothing trained)."""
        by_index = {self.index[m.record.workdir]: m.metrics for m in members}
        return [by_index.get(i) for i in range(count)]

    def close(self) -> None:
        for record in self.records:
            record.close()
            for handler in record.log.handlers:
                handler.close()


def train_group(
    cfgs: list[Any],
    workdirs: list[str | Path],
    *,
    widths: str = "pad",
    max_batch: int | None = None,
    halving: Halving | AsyncHalving | None = None,
    pbt: PopulationBasedTraining | None = None,
    devices: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Plan `cfgs` (sweeper.train.plan: `widths` auto, group or pad; at most `max_batch` per program;
    `halving` or `pbt`, the search) over the first `devices` local devices (None: all) and train them
    (`train_plan`, which takes `options`)."""
    placed = local_devices(devices)
    pad = pads_widths(widths, accelerator=placed[0].platform != "cpu")
    search = Search(halving, pbt)
    accelerator = placed[0].platform != "cpu"
    planned = plan(
        cfgs, pad_widths=pad, max_batch=max_batch, search=search, devices=len(placed), accelerator=accelerator
    )
    return train_plan(planned, workdirs, **options)


def train_plan(
    planned: Plan,
    workdirs: list[str | Path],
    *,
    log_files: list[Path | None] | None = None,
    log_format: str = LOG_FORMAT,
    device_data: dict | None = None,
    on_end: OnEnd | None = None,
) -> list[dict[str, Any] | None]:
    """Train the groups of `planned`, config i into `workdirs[i]`; each config's metrics (None for a
    config in no group). `device_data` keeps datasets on the device across calls; `log_files` receive
    each member's log lines (else they go to this module's logger); `on_end(i, metrics)` is called as
    soon as config i has finished."""
    files = log_files or [None] * len(planned.cfgs)
    trained = sorted(i for g in planned.groups for i in g.members)
    # Records are numbered among the configs that train; `on_end` hears the plan's own positions.
    ended = None if on_end is None else lambda k, metrics: on_end(trained[k], metrics)
    records = Records(log_format, ended)
    position = {i: records.add(planned.cfgs[i], workdirs[i], files[i]) for i in trained}
    cfgs = [planned.cfgs[i] for i in trained]
    renumbered = Plan(
        tuple(cfgs),
        tuple(Group(tuple(position[i] for i in g.members), g.slots) for g in planned.groups),
        planned.pad_widths,
        planned.devices,
        planned.search,
    )
    datasets, placement = DatasetCache(device_data), Placement(local_devices(planned.devices))
    members: list[Member] = []
    try:
        for number, group in enumerate(renumbered.pools):
            members += _train_pool(number, group, renumbered, records, datasets, placement)
        for cohort in renumbered.cohorts():
            members += _train_cohort(cohort, renumbered, records, datasets, placement)
    finally:
        records.close()
    by_position = records.in_order(members, len(cfgs))
    out: list[dict[str, Any] | None] = [None] * len(planned.cfgs)
    for i in trained:
        out[i] = by_position[position[i]]
    return out


def _train_pool(
    number: int, group: Group, planned: Plan, records: Records, datasets: DatasetCache, placement: Placement
) -> list[Member]:
    """One slot pool of `planned` (sweeper.train.pool)."""
    started = time.perf_counter()
    splits, load_s = datasets.get(planned.cfgs[group.members[0]].data)
    pool = SlotPool(
        number,
        list(group.members),
        group.slots,
        list(planned.cfgs),
        records.records,
        splits.info,
        pad_widths=planned.pad_widths,
    )
    clock = Clock(started, load_s, max(len(group), group.slots))
    return pool.train(splits, placement, planned.search.controllers, clock, records.ended)


def train_stream(
    next_configs: Callable[[int], list[tuple[Any, Path, Path | None]]],
    *,
    slots: int,
    search: Search | None = None,
    log_format: str = LOG_FORMAT,
    device_data: dict | None = None,
    on_end: OnEnd | None = None,
    devices: int | None = None,
    pad_widths: bool = True,
) -> list[dict[str, Any]]:
    """Train configs as one slot pool of `slots` rows, asking `next_configs(free)` for up to `free`
    more (cfg, workdir, log file) whenever rows free, until it returns none; each one's metrics, in
    the order asked. The configs must share a fuse key with widths padded (an Optuna study's trials):
    `pad_widths`, one program padded to the widest member, else a program per width
    (sweeper.train.pool). `on_end(i, metrics)`: as soon as the i-th config asked has finished."""
    search = search or Search()
    placement = Placement(local_devices(devices))
    records, cfgs = Records(log_format, on_end), []

    def more(free: int) -> list[int]:
        new = []
        for cfg, workdir, log_file in next_configs(free):
            check_arrival(cfg, search)
            new.append(records.add(cfg, workdir, log_file))
            cfgs.append(cfg)
        return new

    first = more(slots)
    if not first:
        return []
    started = time.perf_counter()
    try:
        stream_plan(cfgs, slots=slots, search=search, devices=placement.count)
        splits, load_s = DatasetCache(device_data).get(cfgs[0].data)
        pool = SlotPool(0, first, slots, cfgs, records.records, splits.info, more=more, pad_widths=pad_widths)
        clock = Clock(started, load_s, slots)
        members = pool.train(splits, placement, search.controllers, clock, records.ended)
    finally:
        records.close()
    return records.in_order(members, len(cfgs))


def _train_cohort(
    cohort: list[Group], planned: Plan, records: Records, datasets: DatasetCache, placement: Placement
) -> list[Member]:
    """Build a program per group and resume step, and train them all in one engine."""
    started = time.perf_counter()
    programs, members, data_s = [], [], 0.0
    for group in cohort:
        splits, load_s = datasets.get(planned.cfgs[group.members[0]].data)
        data_s = max(data_s, load_s)
        group_members = _members(group, planned, records, splits.info)
        # Members resumed from different steps cannot share a scan: each start gets its own program.
        by_start = itertools.groupby(sorted(group_members, key=lambda m: m.start), key=lambda m: m.start)
        for _, part in by_start:
            programs.append(_program(list(part), splits, placement))
        members += group_members
    for m, program in ((m, p) for p in programs for m in p.members):
        m.record.open(m.start, program.splits.info)
    controllers = [ScheduleReplay(), *planned.search.controllers]
    if any(has_trial(m.cfg) for m in members):
        controllers.append(TrialPruning(members))
    clock = Clock(started, data_s, len(members))
    schedule = Schedule.of(planned.cfgs[cohort[0].members[0]])
    Engine(programs, schedule, controllers=controllers, clock=clock, on_end=records.ended).run()
    log.info(
        "fused training done in %.1f s (compile %.1f s): %s",
        time.perf_counter() - started,
        sum(p.segments.compile_s for p in programs),
        statuses(members),
    )
    return members


def _members(group: Group, planned: Plan, records: Records, info: data.Info) -> list[Member]:
    """The group's members, fresh or resumed; under a search that keeps one program (population-based
    training), all from the step every one of them reached."""
    cfgs, logs = [planned.cfgs[i] for i in group.members], [records.records[i] for i in group.members]
    for record in logs:
        record.log_config()
    for cfg in cfgs:
        check_batch_size(cfg, info.num_train)
    population = planned.search.pbt is not None
    members = [new_member(c, r, info, population=population) for c, r in zip(cfgs, logs, strict=True)]
    if any(c.one_program for c in planned.search.controllers) and len({m.start for m in members}) > 1:
        # Killed between two members' checkpoints: all go back to the step they all reached.
        upto = min(m.start for m in members)
        members = [
            new_member(c, r, info, upto, population=population) for c, r in zip(cfgs, logs, strict=True)
        ]
    return members


def _program(members: list[Member], splits: train_step.DeviceSplits, placement: Placement) -> Program:
    program = Program(members, splits, stacked=True, placement=placement)
    spans = f" on {placement.count} devices" if program.placement is not None else ""
    log.info(
        "fused program: %d jobs, %s%s, from step %d%s",
        len(members),
        show_widths(program.widths),
        " (narrower members padded and masked)" if program.padded else "",
        program.step,
        spans,
    )
    for m in members:
        m.record.log.info(
            "fused with %d jobs in one program (%s)%s", len(members), show_widths(program.widths), spans
        )
    return program

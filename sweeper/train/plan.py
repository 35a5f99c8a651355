"""One plan per sweep: which configs train together, as which programs or slot pools, on how many
devices, under which search (halving, population-based training), with every check that needs the
whole sweep done once, before any work.

    search = Search.of(settings, cfgs[0], sweep_dir)       # from `hydra.launcher.*`
    planned = plan(cfgs, pad_widths=True, max_batch=8, search=search, devices=1)
    sweeper.train.fused.train_plan(planned, workdirs)

The fused launcher, its slot pools, fused_slurm (in Hydra's process and in each SLURM job) and the
memory check read the same plan. Importable without Hydra running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sweeper import checks, config, memory, work
from sweeper.config import ConfigError
from sweeper.objective import Objective, check_sweep_objective
from sweeper.task import models
from sweeper.train.controllers import AsyncHalving, Halving, PopulationBasedTraining, default_rungs
from sweeper.train.engine import Controller

WIDTHS = ("auto", "group", "pad")  # hydra.launcher.widths
RUNG_FILE = "halving_rungs.jsonl"  # asynchronous halving's results, in the sweep folder


def pads_widths(widths: str, *, accelerator: bool) -> bool:
    """Whether configs that differ in the model's paddable keys (`hidden`) share a program, zero-padded
    to the widest (`pad`), or train in a program per width (`group`). `auto`: measured on a 2-core CPU,
    grouping beats padding (padding costs about its extra arithmetic); on an accelerator a small program
    is dispatch-bound and padding wins."""
    if widths not in WIDTHS:
        raise ConfigError(f"hydra.launcher.widths must be auto, group or pad, got {widths!r}")
    return widths == "pad" or (widths == "auto" and accelerator)


@dataclass(frozen=True)
class Search:
    """What acts on a sweep's members while they train, beyond each run's own schedule: successive
    halving (synchronous or asynchronous) or population-based training."""

    halving: Halving | AsyncHalving | None = None
    pbt: PopulationBasedTraining | None = None

    @classmethod
    def of(cls, settings: Any, cfg: Any, sweep_dir: str | Path | None) -> Search:
        """The search `hydra.launcher.*` settings ask for, for configs like `cfg` (its max_steps and
        seed), asynchronous halving's results kept in `sweep_dir`."""
        halving = pbt = None
        if settings.halving:
            rungs = settings.rungs or default_rungs(cfg.max_steps, settings.keep)
            rungs = tuple(sorted({int(r) for r in rungs}))
            if settings.halving == "async":  # its results in the sweep folder: a rerun ranks against them
                rung_file = Path(str(sweep_dir)) / RUNG_FILE if sweep_dir is not None else None
                halving = AsyncHalving(rungs, settings.keep, rung_file)
            else:
                halving = Halving(rungs, settings.keep)
        if settings.pbt.interval:
            p = settings.pbt
            factors = tuple(float(f) for f in p.factors)
            perturb = tuple(str(k) for k in p.perturb)
            pbt = PopulationBasedTraining(p.interval, p.quantile, factors, cfg.seed, perturb)
        return cls(halving, pbt)

    @property
    def controllers(self) -> list[Controller]:
        return [c for c in (self.halving, self.pbt) if c is not None]

    @property
    def lockstep(self) -> bool:
        """Whether it ranks or copies members at one common step: they train side by side, never in a
        slot pool, where each member is at its own step."""
        return any(c.lockstep for c in self.controllers)

    def check(self, cfgs: list[Any]) -> None:
        """Raise ConfigError, before any work, where `cfgs` cannot train under this search."""
        if self.halving and self.pbt:
            raise ConfigError("hydra.launcher: halving and pbt do not mix, choose one")
        rungs = self.halving.rungs if self.halving else ()
        if cfgs and any(not 0 < r < cfg.max_steps for cfg in cfgs for r in rungs):
            raise ConfigError(
                f"hydra.launcher.rungs must be steps in (0, max_steps={cfgs[0].max_steps}), got {list(rungs)}"
            )
        if len({Objective.of(cfg) for cfg in cfgs}) > 1:
            raise ConfigError("objective: one sweep ranks its jobs by one objective, got several")
        for cfg in cfgs:
            check_sweep_objective(cfg)
        if self.pbt and cfgs:
            numeric = (
                "lr",
                "reg",
                *(f"optimizer.{k}" for k in config.optimizer_numeric_keys(cfgs[0].optimizer)),
            )
            for key in self.pbt.perturb:
                if key not in numeric:
                    raise ConfigError(
                        f"hydra.launcher.pbt.perturb: {key} is not a key it can perturb "
                        f"({', '.join(numeric)})"
                    )
        if self.pbt and len({cfg.seed for cfg in cfgs}) > 1:
            raise ConfigError(
                "population-based training needs one seed for the whole population (sweep lr and reg)"
            )

    def check_one_program(self, configs: int, groups: int, *, pooled: bool = False) -> None:
        """Population-based training copies members into each other inside one program: its whole
        population must be one group of fixed members, never a slot pool."""
        if not self.pbt:
            return
        if pooled:
            raise ConfigError(
                "hydra.launcher.pbt copies members within one program, which a slot pool is not: "
                f"its {configs} configs need hydra.launcher.max_batch >= {configs} (and per_job, on "
                "SLURM, at most max_batch)"
            )
        if groups > 1:
            raise ConfigError(
                f"hydra.launcher.pbt copies members within one program: its {configs} configs need "
                f"hydra.launcher.max_batch >= {configs} (and one width or hydra.launcher.widths=pad), "
                f"got {groups} groups"
            )


@dataclass(frozen=True)
class Group:
    """Configs (positions in the plan) that train in one program; with `slots`, a slot pool of that
    many rows that the waiting configs keep full."""

    members: tuple[int, ...]
    slots: int | None = None

    @property
    def pooled(self) -> bool:
        return self.slots is not None and len(self.members) > self.slots

    def __len__(self) -> int:
        return len(self.members)


@dataclass(frozen=True)
class Plan:
    """A sweep's validated configs and how they train: `groups` (programs and slot pools), widths
    padded or not, the local devices every program spreads over, and the search."""

    cfgs: tuple[Any, ...]
    groups: tuple[Group, ...]
    pad_widths: bool
    devices: int = 1
    search: Search = field(default_factory=Search)

    @property
    def pools(self) -> list[Group]:
        return [g for g in self.groups if g.pooled]

    @property
    def programs(self) -> list[Group]:
        """The groups of fixed members."""
        return [g for g in self.groups if not g.pooled]

    def cohorts(self) -> list[list[Group]]:
        """Fixed groups that train in one engine: with a search, every group of one schedule (halving
        ranks, PBT copies across them); without one, each on its own, so that members finish (and show
        up) as early as possible."""
        if not self.search.controllers:
            return [[g] for g in self.programs]
        by_schedule: dict[tuple, list[Group]] = {}
        for g in self.programs:
            cfg = self.cfgs[g.members[0]]
            by_schedule.setdefault((cfg.max_steps, cfg.log_every, cfg.checkpoint_every), []).append(g)
        return list(by_schedule.values())

    def without_singles(self) -> Plan:
        """The plan less its groups of one: without a search, one config gains nothing from a program
        of its own (a launcher runs it as a single run)."""
        if self.search.controllers:
            return self
        return replace(self, groups=tuple(g for g in self.groups if len(g) > 1))

    def check_memory(self) -> None:
        """Raise ConfigError where a program (or slot pool) cannot fit the memory of its devices."""
        for group in self.groups:
            cfg = self.cfgs[group.members[0]]
            memory.check_fits(cfg, members=self.rows_per_device(group), widths=self.widest(group))

    def widest(self, group: Group) -> dict[str, int]:
        """The widths `group`'s program pads to: each paddable model key's widest value."""
        return widest_of([self.cfgs[i] for i in group.members])

    def rows_per_device(self, group: Group) -> int:
        """The rows each device holds of `group`'s program: its members (or slots), padded to a
        multiple of the devices and split over them."""
        return math.ceil((group.slots or len(group)) / self.devices)


def plan(
    cfgs: list[Any],
    *,
    pad_widths: bool,
    max_batch: int | None,
    search: Search | None = None,
    devices: int = 1,
    pools: bool = True,
    check_memory: bool = True,
    accelerator: bool | None = None,
) -> Plan:
    """Validate `cfgs` and group them: equal fuse keys (sweeper.config.fuse_key), similar widths
    together, at most `max_batch` per program (None: as many as half the memory of `devices` devices
    holds, by sweeper.memory's estimate). With `pools` and more configs of one fuse key than
    `max_batch`, those configs are one slot pool of `max_batch` rows instead (not under a lockstep
    search). `pad_widths`: see pads_widths. Raises ConfigError before any work; `check_memory`: whether
    each program must fit this machine's memory (not where it trains on another: fused_slurm).
    `accelerator`: whether the programs run on one (None: unknown); on a CPU, with `max_batch` null, a
    program holds at most `cpu_rows` configs."""
    search = search or Search()
    for cfg in cfgs:
        checks.validate(cfg)
    search.check(cfgs)
    pooling = bool(max_batch) and pools and not search.lockstep
    groups: list[Group] = []
    for pooled in _by_fuse_key(cfgs, pad=True):  # a slot pool buckets its widths itself
        if pooling and len(pooled) > max_batch:
            groups.append(Group(pool_order(pooled, cfgs, search), slots=max_batch))
            continue
        for indices in (
            [pooled] if pad_widths else _by_fuse_key([cfgs[i] for i in pooled], pad=False, at=pooled)
        ):
            size = max_batch or devices * memory.members_that_fit(cfgs[indices[-1]])  # the widest
            if max_batch is None and accelerator is False and (rows := cpu_rows(cfgs[indices[-1]], search)):
                size = min(size, devices * rows)
            groups += [Group(tuple(chunk)) for chunk in chunks(indices, size)]
    planned = Plan(tuple(cfgs), tuple(groups), pad_widths, devices, search)
    search.check_one_program(len(cfgs), len(groups), pooled=bool(planned.pools))
    if check_memory:
        planned.check_memory()
    return planned


def stream_plan(cfgs: list[Any], *, slots: int, search: Search, devices: int = 1) -> Plan:
    """A slot pool of `slots` rows that starts with `cfgs` and takes more as rows free (a stream: an
    Optuna study's trials, each checked with `check_arrival` as it comes), widths padded."""
    if search.lockstep:
        raise ConfigError("hydra.launcher.halving=true waits for each rung to fill: a stream takes async")
    for cfg in cfgs:
        check_arrival(cfg, search)
    planned = Plan(tuple(cfgs), (Group(tuple(range(len(cfgs))), slots=slots),), True, devices, search)
    group = planned.groups[0]
    memory.check_fits(cfgs[0], members=planned.rows_per_device(group), widths=planned.widest(group))
    return planned


def check_arrival(cfg: Any, search: Search) -> None:
    """Raise ConfigError where a config that joins a stream cannot train under `search`."""
    checks.validate(cfg)
    search.check([cfg])


def cpu_rows(cfg: Any, search: Search) -> int | None:
    """The most configs like `cfg` one program of a CPU holds (`max_batch` null; None: no limit): a
    convolutional model's one at a time (`one_at_a_time`, without a search), else as many as share a
    wide matmul to advantage (sweeper.work.cpu_rows); population-based training keeps its whole
    population in one program."""
    if search.pbt is not None:
        return None
    if one_at_a_time(cfg):
        return None if search.controllers else 1
    return work.cpu_rows(models.of_config(cfg), cfg.batch_size)


def one_at_a_time(cfg: Any) -> bool:
    """Whether `cfg`'s model trains faster one config at a time than vmapped with others, on a CPU: a
    convolutional one. XLA:CPU runs a vmapped convolution (a grouped one) slower than the members' own
    one after another: the example CNN's 8-config grid took 2.1x the basic launcher's time vmapped
    (`make bench-model`, benchmarks/RESULTS.md)."""
    return models.abstract(models.of_config(cfg)).convolutional


def fuse_key(cfg: Any, *, pad: bool) -> str:
    """The fuse key of `cfg` (sweeper.config.fuse_key), its model's paddable keys left out where `pad`."""
    cfg_dict = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    paddable = models.abstract(models.of_config(cfg)).padding.keys if pad else ()
    return config.fuse_key(cfg_dict, paddable=paddable)


def widths_of(cfg: Any) -> dict[str, int]:
    """The paddable model keys of `cfg` and their values."""
    return models.widths_of(models.of_config(cfg))


def widest_of(cfgs: list[Any]) -> dict[str, int]:
    """Each paddable model key's widest value among `cfgs`."""
    return models.widest([widths_of(cfg) for cfg in cfgs])


def _by_fuse_key(cfgs: list[Any], pad: bool, at: list[int] | None = None) -> list[list[int]]:
    """Positions of `cfgs` (or `at[i]` for the i-th) by fuse key, each key's sorted by widths (narrowest
    first)."""
    at = at or list(range(len(cfgs)))
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        by_key.setdefault(fuse_key(cfg, pad=pad), []).append(i)
    by_width = lambda i: sorted(widths_of(cfgs[i]).items())  # noqa: E731
    return [
        [at[i] for i in sorted(indices, key=lambda i: [w for _, w in by_width(i)])]
        for indices in by_key.values()
    ]


def pool_order(indices: list[int], cfgs: list[Any], search: Search) -> tuple[int, ...]:
    """The order a slot pool takes configs in: narrowest first (members of one width that join together
    share a program), or under asynchronous halving a random one drawn from the first config's seed, as
    ASHA samples its configs: in a grid's own order, a key the grid varies slowest (the width, above)
    would meet the rungs sorted, and the early ones, judged against few, all go on."""
    if not isinstance(search.halving, AsyncHalving):
        return tuple(indices)
    order = np.random.default_rng(cfgs[indices[0]].seed).permutation(len(indices))
    return tuple(indices[i] for i in order)


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

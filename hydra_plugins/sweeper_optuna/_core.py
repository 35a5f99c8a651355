"""The Optuna sweeper's work, imported (with Optuna) only when it sweeps.

    study = load or create the study in its storage (by default `<sweep dir>/optuna.journal`)
    mark trials an interrupted attempt left running as failed; count the finished ones
    while the study has fewer than n_trials finished trials planned:
        ask n_jobs trials, launch them as one batch, tell each its outcome

A job's outcome is read from its metrics.json where it has one (sweeper's jobs): `pruned` is told as
pruned (Optuna then keeps the last value the job reported), `crashed` and `interrupted` as failed,
anything else as complete with the job's return value.
"""

# No `from __future__ import annotations` (see config.py).
import json
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sweeper.config import ConfigError
from sweeper.pruning import PRUNED_ATTR, PRUNER_ATTR, storage
from sweeper.status import Status

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
JOURNAL = "optuna.journal"


def distribution(override: Override) -> Any:
    """The Optuna distribution of a sweep override, as Hydra's Optuna sweeper reads the grammar:
    `choice(...)` or `a,b,c` -> categorical; `range(start, stop[, step])` -> the ints (or floats) it
    lists, stop excluded as everywhere in Hydra; `interval(a, b)` -> uniform, `tag(log, interval(a, b))`
    -> log-uniform, integer when both ends are."""
    dist = optuna.distributions
    if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
        return dist.CategoricalDistribution(list(override.sweep_iterator()))
    if override.is_range_sweep():
        values, step = list(override.sweep_iterator()), override.value().step
        if all(isinstance(v, int) for v in values) and isinstance(step, int):
            return dist.IntDistribution(values[0], values[-1], step=step)
        return dist.FloatDistribution(values[0], values[-1], step=step)
    if override.is_interval_sweep():
        interval = override.value()
        log_scale = "log" in interval.tags
        if isinstance(interval.start, int) and isinstance(interval.end, int):
            return dist.IntDistribution(interval.start, interval.end, log=log_scale)
        return dist.FloatDistribution(float(interval.start), float(interval.end), log=log_scale)
    raise ConfigError(f"hydra.sweeper: cannot search {override.input_line!r} with Optuna")


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(distributions of the swept keys, overrides of the fixed ones) from `arguments`."""
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def _quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep(sweeper: Any, arguments: list[str]) -> None:
    config = sweeper.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # the sweep's record, as Hydra's sweepers keep it
    space, fixed = search_space([f"{k}={v}" for k, v in sweeper.params.items()] + list(arguments))
    url = sweeper.storage or str(sweep_dir / JOURNAL)
    study, finished = _open_study(sweeper, url)
    to_go = sweeper.n_trials - finished
    log.info(
        "Optuna study %s in %s: %d finished trials, %d to run (n_trials=%d)",
        sweeper.study_name,
        url,
        finished,
        max(to_go, 0),
        sweeper.n_trials,
    )
    job_idx = 0
    while to_go > 0:
        trials = [study.ask(space) for _ in range(min(sweeper.n_jobs, to_go))]
        batch = [
            fixed + [f"{k}={v}" for k, v in t.params.items()] + _report_to(sweeper, url, t) for t in trials
        ]
        returns = sweeper.launcher.launch(batch, initial_job_idx=job_idx)
        for trial, result in zip(trials, returns, strict=True):
            _tell(study, trial, result)
        job_idx += len(trials)
        to_go -= len(trials)
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        log.info("best trial %d: %s, value %s", best.number, best.params, best.value)


def _open_study(sweeper: Any, url: str) -> tuple[Any, int]:
    """The study (created or continued) and how many finished trials it has."""
    store = storage(url)
    earlier: list[Any] = []
    try:
        existing = optuna.load_study(study_name=sweeper.study_name, storage=store)
        earlier = existing.get_trials(deepcopy=False)
        for trial in earlier:
            if trial.state == TrialState.RUNNING:  # cut off by an interruption
                existing.tell(trial.number, state=TrialState.FAIL)
                log.info("trial %d was cut off by an interruption: marked failed", trial.number)
    except KeyError:  # no such study yet
        pass
    sampler_cfg = OmegaConf.to_container(sweeper.sampler, resolve=True)
    if sampler_cfg.get("seed") is not None:  # a seeded sampler would replay the first attempt's suggestions
        sampler_cfg["seed"] = int(sampler_cfg["seed"]) + len(earlier)
    study = optuna.create_study(
        study_name=sweeper.study_name,
        storage=store,
        sampler=instantiate(sampler_cfg),
        pruner=instantiate(sweeper.pruner) if sweeper.pruner else optuna.pruners.NopPruner(),
        direction=sweeper.direction,
        load_if_exists=True,
    )
    pruner = OmegaConf.to_container(sweeper.pruner, resolve=True) if sweeper.pruner else None
    study.set_user_attr(PRUNER_ATTR, pruner)  # the jobs judge their trials with the same pruner
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    return study, finished


def _report_to(sweeper: Any, url: str, trial: Any) -> list[str]:
    """Overrides that tell a job its trial, so that it can report to the pruner (none without one)."""
    if not sweeper.pruner:
        return []
    key = sweeper.report_key
    return [
        f"{key}.storage={_quote(url)}",
        f"{key}.study_name={_quote(sweeper.study_name)}",
        f"{key}.number={trial.number}",
    ]


def _tell(study: Any, trial: Any, result: JobReturn) -> None:
    """Tell the study how the job of `trial` ended."""
    status = _job_status(result)
    # The job set the attribute through its own Trial object: read it back from the storage.
    stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    if status is Status.PRUNED or stored.user_attrs.get(PRUNED_ATTR):
        study.tell(trial, state=TrialState.PRUNED)
    elif result.status != JobStatus.COMPLETED or status in (Status.CRASHED, Status.INTERRUPTED):
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, float(result.return_value))


def _job_status(result: JobReturn) -> Status | None:
    """The status in the job's metrics.json, where it wrote one."""
    try:
        folder = Path(str(result.hydra_cfg.hydra.runtime.output_dir))
        return Status(json.loads((folder / "metrics.json").read_text())["status"])
    except (AttributeError, OSError, ValueError, KeyError, TypeError):
        return None

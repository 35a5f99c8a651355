"""The Optuna sweeper's work, imported (with Optuna) only when it sweeps.

    check the settings and parse the search space (bad input: one line, exit 2, nothing written)
    study = load or create the study in its storage (by default `<sweep dir>/optuna.journal`)
    count the finished trials; those an interrupted attempt left running are launched again first
    while the study has fewer than n_trials finished trials planned:
        ask n_jobs trials (the space's distributions, then custom_search_space), launch them as one batch
        (n_jobs null: 1, or with the fused launcher the rows it chooses for its device)
        tell each its outcome; log each failure in one line; past max_failure_rate, stop
    (with the fused launcher: n_jobs trials train at once in one slot pool, a trial asked as soon as
    one ends and told as soon as it ends)
    write optimization_results.yaml: the best params and value, or the Pareto front

A job's outcome: `pruned` when its pruner stopped it (through sweeper.trial, or a raised
optuna.TrialPruned); failed when it raised, returned something that is not its objective(s), or (sweeper's
jobs, whose metrics.json says so) crashed or was interrupted; otherwise complete with its return value.
"""

# No `from __future__ import annotations` (see config.py).
import functools
import importlib.util
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from sweeper.config import ConfigError
from sweeper.status import Status
from sweeper.trial import ENV, PRUNED_ATTR, PRUNER_ATTR, TrialRef, storage

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
JOURNAL = "optuna.journal"
RESULTS = "optimization_results.yaml"
DIRECTIONS = ("minimize", "maximize")
OBJECTIVE_DIRECTIONS = {"max": "maximize", "min": "minimize"}  # an app objective's mode, as a direction
# A string that an override's value grammar reads back as that string; others are quoted.
_PLAIN = re.compile(r"(?!(?i:true|false|null|nan|inf)$)[A-Za-z_][\w./-]*")
# Samplers that need a package Optuna itself does not install.
NEEDS = {"optuna.samplers.GPSampler": "torch", "optuna.samplers.CmaEsSampler": "cmaes"}


def distribution(override: Override) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a sweep override, as Hydra's Optuna sweeper builds it: `choice(...)`,
    `a,b,c` or `shuffle(range(...))` -> categorical; `range(start, stop[, step])` -> ints (floats if any
    bound or the step is a float) from start to stop, both included; `interval(a, b)` -> uniform floats,
    `int(interval(a, b))` -> ints; `tag(log, ...)` -> on a log scale."""
    dist = optuna.distributions
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return dist.CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            step = float(value.step) if value.step else None
            return dist.FloatDistribution(float(value.start), float(value.stop), step=step)
        return dist.IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return dist.IntDistribution(value.start, value.end, log=log_scale)
        return dist.FloatDistribution(value.start, value.end, log=log_scale)
    raise ConfigError(f"not a choice, range or interval: {override.input_line!r}")


@dataclass
class SearchSpace:
    """What each trial samples, what every job gets as it is, and the `~key` deletions. A plain value
    fixes its key even where `params` searches it (the command line's `y=0` beats `y: interval(...)`),
    as in Hydra's Optuna sweeper."""

    distributions: dict[str, Any]
    fixed: dict[str, str]
    deletions: list[str]

    @classmethod
    def parse(cls, params: dict[str, Any], arguments: list[str]) -> "SearchSpace":
        lines = [(f"hydra.sweeper.params.{k}", f"{k}={v}") for k, v in params.items()]
        lines += [(f"the override {a!r}", a) for a in arguments]
        space = cls({}, {}, [])
        parser = OverridesParser.create()
        for where, line in lines:
            try:
                (override,) = parser.parse_overrides([line])
            except HydraException as error:
                raise ConfigError(f"{where}: cannot parse {line!r}: {_first_line(error)}") from None
            if override.is_delete():
                space.deletions.append(line)
            elif override.is_sweep_override():
                try:
                    space.distributions[override.get_key_element()] = distribution(override)
                except (ConfigError, ValueError, HydraException) as error:  # glob(...), say
                    raise ConfigError(f"{where}: Optuna cannot search it: {_first_line(error)}") from None
            else:
                space.fixed[override.get_key_element()] = override.get_value_element_as_str()
        for key in space.fixed:
            space.distributions.pop(key, None)
        return space

    def grid(self) -> dict[str, list[Any]]:
        """Every value of each distribution, for Optuna's GridSampler."""
        values: dict[str, list[Any]] = {}
        for key, d in self.distributions.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                values[key] = list(d.choices)
            elif d.step is not None and not d.log:
                count = int(round((d.high - d.low) / d.step)) + 1
                values[key] = [d.low + i * d.step for i in range(count)]
            else:
                raise ConfigError(
                    f"hydra/sweeper/sampler=grid: {key} is continuous; a grid takes choice(...), range(...)"
                )
        return values

    def overrides(self, trial: Any) -> list[str]:
        """A trial's job overrides: its sampled values, then the fixed ones and the deletions. A sampled
        string that the override grammar would read as something else (`a,b`, `true`) is quoted."""
        sampled = {
            k: _quote(v) if isinstance(v, str) and not _PLAIN.fullmatch(v) else v
            for k, v in trial.params.items()
        }
        return [f"{k}={v}" for k, v in {**sampled, **self.fixed}.items()] + self.deletions


@dataclass
class Plan:
    """The sweep's settings, checked before anything is written."""

    directions: list[str]
    space: SearchSpace
    sampler: dict[str, Any]
    pruner: dict[str, Any] | None
    extend: Callable[[Any, Any], None] | None
    n_trials: int
    grid: dict[str, list[Any]] | None

    @classmethod
    def of(cls, sweeper: Any, arguments: list[str]) -> "Plan":
        directions = _directions(sweeper.direction, _objective_mode(sweeper))
        if sweeper.n_trials < 1 or (sweeper.n_jobs is not None and sweeper.n_jobs < 1):
            raise ConfigError(
                f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {sweeper.n_trials}, {sweeper.n_jobs}"
            )
        if not 0.0 <= sweeper.max_failure_rate <= 1.0:
            raise ConfigError(
                f"hydra.sweeper.max_failure_rate must be in [0, 1], got {sweeper.max_failure_rate}"
            )
        space = SearchSpace.parse(sweeper.params, list(arguments))
        sampler = _spec(sweeper.sampler)
        grid = space.grid() if sampler.get("_target_") == "optuna.samplers.GridSampler" else None
        pruner = _spec(sweeper.pruner) if sweeper.pruner else None
        if pruner and len(directions) > 1:
            raise ConfigError("hydra.sweeper.pruner: Optuna prunes single-objective studies only")
        plan = cls(
            directions, space, sampler, pruner, _extender(sweeper.custom_search_space), sweeper.n_trials, grid
        )
        plan.make_sampler(0)
        plan.make_pruner()
        if grid is not None:
            plan.n_trials = min(plan.n_trials, math.prod(len(v) for v in grid.values()))
        return plan

    def make_sampler(self, earlier_trials: int) -> Any:
        """The sampler; a seeded one is offset by the trials the study already has, so that a rerun
        does not replay the first attempt's suggestions."""
        spec = dict(self.sampler)
        needed = NEEDS.get(spec.get("_target_", ""))
        if needed and importlib.util.find_spec(needed) is None:
            raise ConfigError(
                f"hydra.sweeper.sampler: {spec['_target_']} needs {needed}: pip install {needed}"
            )
        if spec.get("seed") is not None:
            spec["seed"] = int(spec["seed"]) + earlier_trials
        try:
            sampler = instantiate(spec)
            return sampler(self.grid) if isinstance(sampler, functools.partial) else sampler
        except Exception as error:
            raise ConfigError(f"hydra.sweeper.sampler: {_first_line(error)}") from None

    def make_pruner(self) -> Any:
        try:
            return instantiate(self.pruner) if self.pruner else optuna.pruners.NopPruner()
        except Exception as error:
            raise ConfigError(f"hydra.sweeper.pruner: {_first_line(error)}") from None


def _objective_mode(sweeper: Any) -> tuple[str, str] | None:
    """(the app's objective node, its mode: max or min), where `objective_key` names one."""
    key = getattr(sweeper, "objective_key", None)
    mode = OmegaConf.select(sweeper.config, f"{key}.mode", default=None) if key and sweeper.config else None
    if mode is None:
        return None
    if mode not in OBJECTIVE_DIRECTIONS:
        raise ConfigError(f"{key}.mode must be max or min, got {mode!r}")
    return key, mode


def _directions(direction: Any, objective: tuple[str, str] | None = None) -> list[str]:
    """The study's directions: `direction` (one or a list), or with `direction` null the one the app's
    objective mode gives. A direction whose first entry contradicts that mode is refused: the study and
    its pruner would keep the trials the app ranks worst."""
    if direction is None and objective is not None:
        return [OBJECTIVE_DIRECTIONS[objective[1]]]
    names = (
        list(direction)
        if OmegaConf.is_list(direction) or isinstance(direction, list | tuple)
        else [direction]
    )
    names = [getattr(d, "name", d) for d in names]  # Hydra's Direction enum, where a config uses it
    if not names or any(d not in DIRECTIONS for d in names):
        raise ConfigError(
            f"hydra.sweeper.direction must be minimize or maximize, or a list of them; got {direction}"
        )
    if objective is not None and names[0] != OBJECTIVE_DIRECTIONS[objective[1]]:
        key, mode = objective
        raise ConfigError(
            f"hydra.sweeper.direction={names[0]} contradicts {key}.mode={mode}: set one of them, or leave "
            f"hydra.sweeper.direction unset to follow {key}.mode"
        )
    return names


def _spec(node: Any) -> dict[str, Any]:
    """A sampler's or pruner's config as instantiate's input, without its null keys (Optuna's defaults)."""
    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {k: v for k, v in spec.items() if v is not None}


def _extender(path: str | None) -> Callable[[Any, Any], None] | None:
    if not path:
        return None
    try:
        return get_method(path)
    except Exception as error:
        raise ConfigError(
            f"hydra.sweeper.custom_search_space: cannot import {path!r}: {_first_line(error)}"
        ) from None


def _first_line(error: BaseException) -> str:
    """An error's first line; for instantiate's "Error in call to target ...", its cause's."""
    while error.__cause__ is not None and "Error in call to target" in str(error):
        error = error.__cause__
    text = str(error).strip().split(", set env var HYDRA_FULL_ERROR")[0]
    return text.splitlines()[0] if text else type(error).__name__


def _quote(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep(sweeper: Any, arguments: list[str]) -> None:
    """Run the study (see the module's docstring); bad settings end it in one line, exit status 2."""
    launcher = sweeper.launcher
    try:
        plan = Plan.of(sweeper, arguments)
        streams = getattr(launcher, "can_stream", lambda: False)()  # its own checks, before the study
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    config = sweeper.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # the sweep's record, as Hydra's sweepers keep it
    url = sweeper.storage or str(sweep_dir / JOURNAL)
    study, finished, pending = _open_study(sweeper, plan, url)
    to_go = plan.n_trials - finished
    log.info(
        "Optuna study %s in %s (%s, %s): %d finished trials, %d to run (n_trials=%d)",
        study.study_name,
        url,
        type(study.sampler).__name__,
        "/".join(plan.directions),
        finished,
        max(to_go, 0),
        plan.n_trials,
    )

    def next_trial() -> Any:  # the trials an interrupted attempt left running first: they resume
        return pending.pop(0) if pending else _ask(study, plan, config)

    def overrides(trial: Any) -> list[str]:
        return plan.space.overrides(trial) + _trial_overrides(sweeper, url, study, trial)

    n_jobs = sweeper.n_jobs or (launcher.default_slots() if streams else 1)
    if to_go > 0 and streams:
        _stream(launcher, study, plan, sweeper, n_jobs, to_go, next_trial, overrides)
        to_go = 0
    job_idx = 0
    while to_go > 0:
        trials = [next_trial() for _ in range(min(n_jobs, to_go))]
        returns = launcher.launch([overrides(t) for t in trials], initial_job_idx=job_idx)
        failed = [r for t, r in zip(trials, returns, strict=True) if not _tell(study, t, r, plan)]
        if _past_rate(failed, len(returns), sweeper.max_failure_rate):
            _stop(len(failed), len(returns), sweeper.max_failure_rate, failed)
        job_idx += len(trials)
        to_go -= len(trials)
    _write_results(study, sweep_dir / RESULTS)


def _stream(
    launcher: Any,
    study: Any,
    plan: Plan,
    sweeper: Any,
    n_jobs: int,
    to_go: int,
    next_trial: Callable[[], Any],
    overrides: Callable[[Any], list[str]],
) -> None:
    """`to_go` trials through a launcher that keeps `n_jobs` of them training at once (the fused
    launcher's slot pool): a trial asked as soon as one ends, told as soon as it ends. Past
    max_failure_rate (of the trials told so far) no more are asked, and the sweep stops once those
    training have ended."""
    trials: list[Any] = []
    failed: list[JobReturn] = []

    def next_overrides() -> list[str] | None:
        if len(trials) >= to_go or _past_rate(failed, len(trials), sweeper.max_failure_rate):
            return None
        trials.append(next_trial())
        return overrides(trials[-1])

    def on_return(k: int, result: JobReturn) -> None:
        if not _tell(study, trials[k], result, plan):
            failed.append(result)

    launcher.launch_stream(next_overrides, on_return, slots=min(n_jobs, to_go), initial_job_idx=0)
    if _past_rate(failed, len(trials), sweeper.max_failure_rate):
        _stop(len(failed), len(trials), sweeper.max_failure_rate, failed)


def _past_rate(failed: list[JobReturn], told: int, rate: float) -> bool:
    """Whether the failed trials are more than `rate` of the `told` ones."""
    return bool(failed) and len(failed) / told > rate


def _open_study(sweeper: Any, plan: Plan, url: str) -> tuple[Any, int, list[Any]]:
    """The study (created or continued), how many finished trials it has, and the trials an
    interrupted attempt left running (their jobs resume from their checkpoints, then they are told)."""
    store = storage(url)
    name = sweeper.study_name
    if name is None:  # the study this storage already holds, if it holds just one
        names = optuna.get_all_study_names(store)
        name = names[0] if len(names) == 1 else None
    earlier: list[Any] = []
    if name is not None and name in optuna.get_all_study_names(store):
        existing = optuna.load_study(study_name=name, storage=store)
        earlier = existing.get_trials(deepcopy=False)
    study = optuna.create_study(
        study_name=name,
        storage=store,
        sampler=plan.make_sampler(len(earlier)),
        pruner=plan.make_pruner(),
        directions=plan.directions,
        load_if_exists=True,
    )
    study.set_user_attr(PRUNER_ATTR, plan.pruner)  # the jobs judge their trials with the same pruner
    pending = [t for t in earlier if t.state == TrialState.RUNNING]  # cut off by an interruption
    for trial in pending:
        log.info("trial %d was cut off by an interruption: its job runs again, and resumes", trial.number)
    return study, len(study.get_trials(deepcopy=False, states=FINISHED)), pending


def _ask(study: Any, plan: Plan, config: Any) -> Any:
    """A new trial: sampled from the space, extended by custom_search_space, the fixed keys recorded."""
    trial = study.ask(plan.space.distributions)
    for key, value in plan.space.fixed.items():
        trial.set_user_attr(key, value)
    if plan.extend is not None:
        plan.extend(config, trial)
        if overlap := sorted(trial.params.keys() & plan.space.fixed.keys()):
            study.tell(trial, state=TrialState.FAIL)
            print(
                f"error: hydra.sweeper.custom_search_space suggests {', '.join(overlap)}, which the "
                "overrides fix",
                file=sys.stderr,
            )
            sys.exit(2)
    return trial


def _trial_overrides(sweeper: Any, url: str, study: Any, trial: Any) -> list[str]:
    """Overrides that tell a job of a pruning study its trial, so that it can report to it: in the
    config node `report_key` where the app has one, else in the job's environment (sweeper.trial)."""
    if not sweeper.pruner:
        return []
    if key := sweeper.report_key:
        return [
            f"{key}.storage={_quote(url)}",
            f"{key}.study_name={_quote(study.study_name)}",
            f"{key}.number={trial.number}",
        ]
    return [f"++hydra.job.env_set.{ENV}={_quote(TrialRef(url, study.study_name, trial.number).as_json())}"]


def _tell(study: Any, trial: Any, result: JobReturn, plan: Plan) -> bool:
    """Tell the study how the job of `trial` ended; False (and a line in the log) when it failed."""
    state, values, error = _outcome(study, trial, result, len(plan.directions))
    try:
        study.tell(trial.number, values, state=state)
    except RuntimeError:
        # GridSampler stops the study once its grid is done, through Study.stop, which tell refuses.
        if plan.grid is None:
            raise
    if error is None:
        return True
    log.warning("trial %d failed: %s", trial.number, error)
    return False


def _outcome(study: Any, trial: Any, result: JobReturn, objectives: int) -> tuple[Any, Any, str | None]:
    """(state, values, error) of a finished job."""
    status = _job_status(result)
    # The job set the attribute through its own Trial object: read it back from the storage.
    stored = _stored(study, trial.number)
    if status is Status.PRUNED or stored.user_attrs.get(PRUNED_ATTR):
        return TrialState.PRUNED, None, None
    if result.status != JobStatus.COMPLETED:
        try:
            result.return_value  # noqa: B018 - a failed job's return_value raises its exception
        except optuna.TrialPruned:
            return TrialState.PRUNED, None, None
        except Exception as error:
            return TrialState.FAIL, None, f"{type(error).__name__}: {_first_line(error)}"
    if status in (Status.CRASHED, Status.INTERRUPTED):
        return TrialState.FAIL, None, f"job {status.value}: {_job_error(result)}"
    value = result.return_value
    try:
        values = [float(value)] if objectives == 1 else [float(v) for v in value]
    except (TypeError, ValueError):
        expected = "a number" if objectives == 1 else f"a list of {objectives} numbers"
        return TrialState.FAIL, None, f"the task returned {value!r}, not {expected}"
    if len(values) != objectives:
        return TrialState.FAIL, None, f"the task returned {len(values)} values for {objectives} directions"
    if any(math.isnan(v) for v in values):
        return TrialState.FAIL, None, f"the task returned {value!r}"
    return TrialState.COMPLETE, values, None


def _stored(study: Any, number: int) -> Any:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _job_metrics(result: JobReturn) -> dict[str, Any] | None:
    """The job's metrics.json, where it wrote one (sweeper's jobs do)."""
    try:
        folder = Path(str(result.hydra_cfg.hydra.runtime.output_dir))
        return json.loads((folder / "metrics.json").read_text())
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def _job_status(result: JobReturn) -> Status | None:
    try:
        return Status((_job_metrics(result) or {})["status"])
    except (KeyError, ValueError):
        return None


def _job_error(result: JobReturn) -> str:
    return str((_job_metrics(result) or {}).get("error") or "see its log")


def _stop(failures: int, size: int, rate: float, failed: list[JobReturn]) -> None:
    """End the sweep: with the first failed job's own exception where it raised one (as Hydra's
    Optuna sweeper does), else with one line; exit status 1 either way."""
    log.error(
        "%d of %d trials of a batch failed, above max_failure_rate=%s: the sweep stops", failures, size, rate
    )
    for result in failed:
        if result.status != JobStatus.COMPLETED:
            result.return_value  # noqa: B018 - raises the job's exception, with its traceback
    print(
        f"error: {failures} of {size} trials of a batch failed, above hydra.sweeper.max_failure_rate={rate}",
        file=sys.stderr,
    )
    sys.exit(1)


def _write_results(study: Any, path: Path) -> None:
    """optimization_results.yaml, as Hydra's Optuna sweeper writes it: the best trial's params and
    value, or, for several directions, the Pareto front (null when no trial completed)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {"name": "optuna"}
    if len(study.directions) == 1:
        best = study.best_trial if complete else None
        results["best_params"] = best.params if best else None
        results["best_value"] = best.value if best else None
        if best:
            log.info("best trial %d: %s, value %s", best.number, best.params, best.value)
    else:
        front = study.best_trials if complete else []
        results["solutions"] = [{"params": t.params, "values": t.values} for t in front]
        log.info("%d Pareto solutions: %s", len(front), [t.values for t in front])
    if not complete:
        log.warning("no trial completed: %s has no best", path.name)
    OmegaConf.save(OmegaConf.create(results), path)

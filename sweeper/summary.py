"""Sweep summary: one row per config (mean ± std over seeds), a plot, and the HParams experiment. No JAX.

    python -m sweeper.summary multirun/2026-11-28/10-00-00

Reads each job folder's `.hydra/overrides.yaml` and `metrics.json` (a job without one is running,
unfinished or not started), so it works on a finished sweep, a running one, or one that was killed;
the sweep callback calls the same code when a multirun ends.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import math
import shlex
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper.config import (
    MULTIRUN_RECORD,
    NOT_HYPERPARAMETERS,
    SWEEP_ONLY_KEYS,
    ConfigError,
    override_key,
    sweep_overrides,
)
from sweeper.objective import Objective
from sweeper.record.writer import METRIC_TAGS, METRICS_FILE, read_metrics, write_sweep_run
from sweeper.status import Status
from sweeper.sweep.locks import is_locked

SEED_KEY = "seed"
# The sweep's own TensorBoard run, a folder beside the job folders (each job's folder is its run). No `=`
# in it and not `default`, so no job is ever named so (sweeper.config.job_name).
SWEEP_RUN = "sweep_progress"
DEFAULT_OBJECTIVE = Objective()  # what a sweep without a recorded objective ranks by


class Interval(NamedTuple):
    """A swept interval, as Optuna samples it: `interval(low, high)`, log-uniform in `tag(log, ...)`."""

    low: float
    high: float
    log: bool = False


@dataclass
class JobResult:
    """One sweep job as its folder records it: its overrides, its metrics.json (None until it ends), and
    its status: from its metrics.json, else from what is there."""

    name: str
    overrides: list[str]
    params: dict[str, str]
    metrics: dict[str, Any] | None
    status: Status
    finished_at: float = 0.0  # when its metrics.json was written (time.time())

    @property
    def schedule(self) -> list[dict]:
        """Its lr and reg over steps where they changed as it trained (population-based training), else []."""
        schedule = (self.metrics or {}).get("schedule", [])
        return schedule if len(schedule) > 1 else []


def job_status(folder: Path, metrics: dict[str, Any] | None) -> Status:
    """Its metrics.json's status, else running (locked), unfinished (it left a trace) or not started."""
    if metrics is not None:
        return Status(metrics["status"])
    if is_locked(folder):
        return Status.RUNNING
    started = (folder / "checkpoints").is_dir() or any(folder.glob("events.out.tfevents.*"))
    return Status.UNFINISHED if started else Status.NOT_STARTED


@dataclass
class Row:
    """One config (all of a job's overrides but the seed) and its jobs over seeds."""

    params: dict[str, str]
    jobs: list[JobResult] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        """The metric `key` of each of its jobs that has one."""
        return [j.metrics[key] for j in self.jobs if j.metrics and j.metrics.get(key) is not None]

    def mean(self, key: str) -> float | None:
        """The mean of `key` over seeds, None when no job has it."""
        values = self.values(key)
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        """The sample standard deviation of `key` over seeds, None with fewer than two."""
        values = self.values(key)
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def status(self) -> str:
        """Its jobs' status, or how many have each (`1 crashed, 1 ok`) when they differ."""
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status.value] = counts.get(job.status.value, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))

    def rank_key(self, objective: Objective) -> tuple:
        """Ranks configs with a result first, those trained to the end before pruned ones, best first by
        the mean of `objective`'s metric over the seeds that have one (a config whose every job diverged
        or crashed has none: last)."""
        value = self.mean(objective.metric)
        pruned = all(j.status is Status.PRUNED for j in self.jobs)  # ranked below configs trained to the end
        return (value is None, pruned, -objective.score(value))


def parse_params(overrides: list[str]) -> dict[str, str]:
    """The hyperparameters a job's overrides set (key -> value as written), bookkeeping keys left out."""
    return {
        override_key(o): o.split("=", 1)[1]
        for o in overrides
        if "=" in o and override_key(o) not in NOT_HYPERPARAMETERS
    }


def read_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job folder under `sweep_dir` (those with a `.hydra/overrides.yaml`), in name order."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        folder = overrides_file.parent.parent
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        metrics = read_metrics(folder, warn=lambda message: print(f"warning: {message}", file=sys.stderr))
        finished_at = (folder / METRICS_FILE).stat().st_mtime if metrics else 0.0
        status = job_status(folder, metrics)
        jobs.append(JobResult(folder.name, overrides, parse_params(overrides), metrics, status, finished_at))
    return jobs


def group(jobs: list[JobResult], objective: Objective = DEFAULT_OBJECTIVE) -> list[Row]:
    """Jobs grouped by config (everything but the seed), best by `objective` first."""
    rows: dict[tuple, Row] = {}
    for job in jobs:
        params = {k: v for k, v in job.params.items() if k != SEED_KEY}
        rows.setdefault(tuple(sorted(params.items())), Row(params)).jobs.append(job)
    return sorted(rows.values(), key=lambda r: r.rank_key(objective))


def sweep_objective(sweep_dir: Path) -> Objective:
    """The objective the sweep ranks by, as its `multirun.yaml` says (the default without one)."""
    path = Path(sweep_dir) / MULTIRUN_RECORD
    try:
        return Objective.of(OmegaConf.load(path)) if path.is_file() else Objective()
    except ConfigError:  # a record sweeper did not write: rank as sweeper does by default
        return Objective()


def result_metrics(objective: Objective) -> list[str]:
    """The metrics the table shows: val and test accuracy, and the objective's metric if it is another."""
    return list(dict.fromkeys(["val_accuracy", "test_accuracy", objective.metric]))


def varied_keys(jobs: list[JobResult], declared: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The table's keys: those declared as swept, then any other taking more than one value across jobs."""
    seen: dict[str, set[str]] = {}
    for job in jobs:
        for key, value in job.params.items():
            seen.setdefault(key, set()).add(value)
    keys = [k for k in declared if k in seen] + [k for k, v in seen.items() if len(v) > 1]
    return list(dict.fromkeys(keys))


def sweep_domains(sweep_dir: Path) -> dict[str, list | Interval]:
    """What `multirun.yaml` declares as swept: key -> its list of values, or its Interval."""
    path = Path(sweep_dir) / MULTIRUN_RECORD
    if not path.is_file():
        return {}
    domains: dict[str, list | Interval] = {}
    for override in sweep_overrides(OmegaConf.load(path).hydra):
        key = override_key(override.get_key_element())
        if key in NOT_HYPERPARAMETERS or not override.is_sweep_override():
            continue
        if override.is_interval_sweep():
            interval = override.value()
            domains[key] = Interval(float(interval.start), float(interval.end), "log" in interval.tags)
        elif override.is_discrete_sweep():
            domains[key] = list(override.sweep_iterator())
    return domains


def _short(value: str) -> str:
    """A swept value for the table: long floats (Optuna's) cut to 4 significant digits."""
    number = _number(value)
    return f"{number:.4g}" if number is not None and not number.is_integer() else value


def _fmt(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def command_for(row: Row, launch: str = "python run.py") -> str:
    """A ready-to-paste command that trains `row`'s config alone: its first job's overrides but the
    seed and what means something only in a sweep (the Optuna trial); `launch` starts it (`launch_of`)."""
    job = row.jobs[0]
    if job.schedule:  # replay how its lr, reg and optimizer values changed
        return replay_command(job, launch)
    skip = (SEED_KEY, *SWEEP_ONLY_KEYS)
    overrides = [o for o in job.overrides if override_key(o) not in skip]
    return f"{launch} " + " ".join(shlex.quote(o) for o in overrides)


def replay_command(job: JobResult, launch: str = "python run.py") -> str:
    """A single run that retraces `job`'s schedule from step 0: its first lr, reg and optimizer values,
    then each change (exact values: a replay reproduces the run only with the same numbers), with the
    job's seed."""
    first, changes = job.schedule[0], job.schedule[1:]
    optimizer = [f"optimizer.{k}" for k in first.get("optimizer", {})]
    skip = ("lr", "reg", "schedule", *optimizer, *SWEEP_ONLY_KEYS)
    overrides = [o for o in job.overrides if override_key(o) not in skip]

    def entry(change: dict) -> str:
        values = ",".join(f"{k}:{v!r}" for k, v in change.get("optimizer", {}).items())
        tail = f",optimizer:{{{values}}}" if values else ""
        return f"{{step:{change['step']},lr:{change['lr']!r},reg:{change['reg']!r}{tail}}}"

    overrides += [f"lr={first['lr']!r}", f"reg={first['reg']!r}"]
    overrides += [f"optimizer.{k}={v!r}" for k, v in first.get("optimizer", {}).items()]
    overrides += [f"schedule=[{','.join(entry(c) for c in changes)}]"]
    return f"{launch} " + " ".join(shlex.quote(o) for o in overrides)


def launch_of(sweep_dir: Path) -> str:
    """How a single run of the sweep starts: `python run.py`, after the sweep's own `--config-dir` and
    `PYTHONPATH=...` where its model's module is the user's (from its multirun.yaml; here if not readable)."""
    path = Path(sweep_dir) / MULTIRUN_RECORD
    try:
        record = OmegaConf.load(path)
        sources = OmegaConf.select(record, "hydra.runtime.config_sources", default=None) or []
        dirs = [str(s.path) for s in sources if s.get("provider") == "command-line"]
        target = str(OmegaConf.select(record, "model._target_", default="") or "")
    except (OSError, OmegaConfBaseException):
        return "python run.py"
    prefix = f"PYTHONPATH={shlex.quote(folder)} " if (folder := _module_folder(target)) else ""
    flags = "".join(f" --config-dir {shlex.quote(_relative(d))}" for d in dirs)
    return f"{prefix}python run.py{flags}"


def _module_folder(target: str) -> str | None:
    """The folder to put on PYTHONPATH for a model class of the user's (None: sweeper's own, or unknown),
    found without importing the module."""
    top = target.split(".", 1)[0]
    if not top or top == "sweeper":
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin).parent
    return _relative(str(origin.parent if spec.submodule_search_locations else origin))


def _relative(path: str) -> str:
    """`path` relative to the folder the command runs in, where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return path


def write_csv(path: Path, rows: list[Row], keys: list[str], metrics: list[str]) -> None:
    """summary.csv: every row, ranked, with unrounded means and standard deviations of `metrics`."""
    out = io.StringIO()
    writer = csv.writer(out)
    stats = [f"{metric}_{stat}" for metric in metrics for stat in ("mean", "std")]
    writer.writerow(["rank", *keys, "seeds", "status", *stats, "wall_time_s_mean", "jobs"])
    for rank, row in enumerate(rows, 1):
        cells = [value for metric in metrics for value in (row.mean(metric), row.std(metric))]
        cells.append(row.mean("wall_time_s"))
        writer.writerow(
            [
                rank,
                *(row.params.get(k, "") for k in keys),
                len(row.jobs),
                row.status,
                *("" if c is None else f"{c:.6g}" for c in cells),
                " ".join(j.name for j in row.jobs),
            ]
        )
    path.write_text(out.getvalue())


def markdown(rows: list[Row], keys: list[str], metrics: list[str], top: int | None = None) -> str:
    """The ranked table in Markdown, its first `top` rows (all by default), a column per metric."""
    labels = [metric.replace("_", " ") for metric in metrics]
    header = ["#", *keys, "seeds", *labels, "wall time (s)", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, row in enumerate(rows[:top], 1):
        cells = [
            str(rank),
            *(_short(row.params.get(k, "")) for k in keys),
            str(len(row.jobs)),
            *(_fmt(row.mean(metric), row.std(metric)) for metric in metrics),
            _fmt(row.mean("wall_time_s"), None, 1),
            row.status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _value_order(value: str) -> tuple:
    """Sort key of swept values: numbers by value, then the rest by name."""
    number = _number(value)
    return (number is None, number or 0.0, value)


def plot(path: Path, jobs: list[JobResult], keys: list[str]) -> None:
    """Accuracy against each swept hyperparameter; diverged/crashed jobs as red crosses on the floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        values = sorted({j.params.get(key, "") for j in jobs}, key=_value_order)
        numeric = all(_number(v) is not None for v in values)
        position = {v: (_number(v) if numeric else i) for i, v in enumerate(values)}
        done = [j for j in jobs if j.status is Status.OK]
        for metric, marker, label in (("val_accuracy", "o", "val"), ("test_accuracy", "^", "test")):
            points = [
                (position[j.params.get(key, "")], j.metrics[metric])
                for j in done
                if j.metrics.get(metric) is not None
            ]
            if points:
                ax.scatter(*zip(*points, strict=True), marker=marker, alpha=0.7, label=label)
        pruned = [
            (position[j.params.get(key, "")], j.metrics["val_accuracy"])
            for j in jobs
            if j.status is Status.PRUNED and j.metrics.get("val_accuracy") is not None
        ]
        if pruned:
            ax.scatter(
                *zip(*pruned, strict=True),
                marker="o",
                facecolors="none",
                edgecolors="grey",
                label="pruned (val)",
            )
        failed = [position[j.params.get(key, "")] for j in jobs if j.status.failed]
        if failed:
            ax.scatter(failed, [0.0] * len(failed), marker="x", color="red", label="diverged/crashed")
        positives = [p for p in position.values() if p > 0]
        if numeric and len(positives) == len(values) > 1 and max(positives) / min(positives) > 20:
            ax.set_xscale("log")
        if numeric and len(values) <= 8 or not numeric:  # label the values the sweep actually took
            ax.set_xticks(list(position.values()), list(position.keys()))
            ax.minorticks_off()
        ax.set_xlabel(key)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncols=3)
    fig.suptitle(f"{len(jobs)} jobs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarize(sweep_dir: str | Path, *, top: int = 5, echo: bool = True) -> list[Row]:
    """Write summary.csv, summary.md, summary.png and the HParams experiment for `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job folders (with .hydra/overrides.yaml) in {sweep_dir}")
    domains = sweep_domains(sweep_dir)
    keys = varied_keys(jobs, list(domains))
    objective = sweep_objective(sweep_dir)
    rows, metrics = group(jobs, objective), result_metrics(objective)
    columns = [k for k in keys if k != SEED_KEY]
    counts = {s: sum(j.status is s for j in jobs) for s in Status}
    status_line = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    best = rows[0] if rows and rows[0].mean(objective.metric) is not None else None
    text = [
        f"# Sweep {sweep_dir}",
        "",
        f"{len(jobs)} jobs in {len(rows)} configs: {status_line}; "
        f"ranked by {objective.label} ({objective.mode}).",
        "",
        markdown(rows, columns, metrics),
    ]
    if best:
        text += ["Best config:", "", "    " + command_for(best, launch_of(sweep_dir)), ""]
    mattered = importance_line(importance(rows, columns, domains, objective))
    text += [mattered, "", *notes(jobs)]
    (sweep_dir / "summary.md").write_text("\n".join(text))
    write_csv(sweep_dir / "summary.csv", rows, columns, metrics)
    plot(sweep_dir / "summary.png", jobs, columns)
    write_tensorboard(sweep_dir, jobs, keys, domains, objective)
    if echo:
        print(f"\nSweep {sweep_dir}: {len(jobs)} jobs, {status_line}")
        print(markdown(rows, columns, metrics, top=top), end="")
        if best:
            value = _fmt(best.mean(objective.metric), best.std(objective.metric))
            print(f"Best config ({objective.label} {value}):\n    {command_for(best, launch_of(sweep_dir))}")
        print(mattered)
        print(f"Full table: {sweep_dir / 'summary.md'}, plot: {sweep_dir / 'summary.png'}")
    return rows


def notes(jobs: list[JobResult]) -> list[str]:
    """What the table does not say: jobs stopped early, jobs whose lr and reg changed, crashes."""
    lines = []
    pruned = [j for j in jobs if j.status is Status.PRUNED]
    if pruned:
        steps = ", ".join(map(str, sorted({j.metrics["steps"] for j in pruned})))
        lines += [
            f"{len(pruned)} job(s) were pruned (stopped early by successive halving or a pruner) at step(s) "
            f"{steps}: their accuracies are from the step they stopped at.",
            "",
        ]
    if any(j.schedule for j in jobs):
        lines += [
            "lr and reg changed as members trained (population-based training): the table shows each "
            "member's starting values; its `schedule` and `lineage` are in its metrics.json, and the "
            "best config above replays the best member's schedule.",
            "",
        ]
    lines += pool_lines(jobs)
    crashed = [j for j in jobs if j.status is Status.CRASHED]
    if crashed:
        lines += (
            ["Crashed jobs:", ""] + [f"- `{j.name}`: {j.metrics.get('error', '?')}" for j in crashed] + [""]
        )
    return lines


@dataclass(frozen=True)
class PoolUsage:
    """How full a slot pool kept its rows, and how much of what they computed its members needed: its
    members' `timings.pool` (their last attempt's)."""

    number: int
    slots: int
    jobs: int
    program_steps: int  # from the first member's joining to the last one's leaving
    trained: int  # member-steps
    needed: float | None = None  # GFLOP at the members' own widths (sweeper.work); None: not recorded
    computed: float | None = None  # GFLOP their rows computed, at their programs' padded widths

    @property
    def occupancy(self) -> float:
        """Member-steps trained over the slot-steps the pool ran."""
        return self.trained / (self.slots * self.program_steps) if self.program_steps else 1.0

    @property
    def compute_occupancy(self) -> float | None:
        """The work the members needed over the work their rows computed (padding is the difference)."""
        if self.needed is None or not self.computed:
            return None
        return self.needed / self.computed


def pool_usage(metrics: list[dict[str, Any]]) -> list[PoolUsage]:
    """Each slot pool of these jobs' metrics.json, by number."""
    pools: dict[tuple, list[dict]] = {}
    for m in metrics:
        if pool := ((m or {}).get("timings") or {}).get("pool"):
            pools.setdefault((pool["id"], pool["slots"]), []).append(pool)
    out = []
    for (number, slots), members in sorted(pools.items()):
        counted = all("gflop" in m for m in members)
        out.append(
            PoolUsage(
                number,
                slots,
                len(members),
                max(m["left"] for m in members) - min(m["joined"] for m in members),
                sum(m["left"] - m["joined"] for m in members),
                sum(m["gflop"] for m in members) if counted else None,
                sum(m["gflop_computed"] for m in members) if counted else None,
            )
        )
    return out


def compute_text(occupancy: float | None) -> str:
    """`, compute occupancy 0.97 (work the members needed / work their rows computed)`, or nothing."""
    if occupancy is None:
        return ""
    return f", compute occupancy {occupancy:.2f} (work the members needed / work their rows computed)"


def pool_lines(jobs: list[JobResult]) -> list[str]:
    """Each slot pool's occupancy, a line each."""
    lines = []
    for pool in pool_usage([job.metrics for job in jobs]):
        lines += [
            f"Slot pool {pool.number}: {pool.jobs} jobs through {pool.slots} slots over {pool.program_steps} "
            f"program steps, slot occupancy {pool.occupancy:.2f} (member-steps trained / slot-steps)"
            + compute_text(pool.compute_occupancy)
            + ".",
            "",
        ]
    return lines


def importance(
    rows: list[Row], keys: list[str], declared: dict, objective: Objective = DEFAULT_OBJECTIVE
) -> dict[str, float] | str:
    """Which swept key mattered most for a good `objective`: Optuna's PED-ANOVA importance of each key
    (fractions summing to 1, largest first) over the configs, each scored by its mean objective (a
    failed job's worst value included, where finite). A reason instead when it cannot be estimated (too
    few configs, or Optuna not installed)."""
    if any(j.schedule for row in rows for j in row.jobs):
        return "lr and reg changed during training, so a member's starting values do not explain its result"
    scored = [(row, row.mean("objective")) for row in rows]
    scored = [(row, value) for row, value in scored if value is not None and math.isfinite(value)]
    if len(scored) < 4:
        return f"needs at least 4 configs with a result, has {len(scored)}"
    try:
        import optuna
    except ImportError:
        return "needs Optuna (pip install 'sweeper[scale]')"
    distributions = {}
    for key in keys:
        values = sorted({row.params[key] for row, _ in scored if key in row.params}, key=_value_order)
        domain = declared.get(key)
        if isinstance(domain, Interval):
            distributions[key] = optuna.distributions.FloatDistribution(
                domain.low, domain.high, log=domain.log
            )
        elif len(values) > 1:
            distributions[key] = optuna.distributions.CategoricalDistribution(values)
    trials = []
    for row, value in scored:
        params = {
            k: (
                float(row.params[k])
                if isinstance(d, optuna.distributions.FloatDistribution)
                else row.params[k]
            )
            for k, d in distributions.items()
            if k in row.params
        }
        dists = {k: distributions[k] for k in params}
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=objective.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(trials)
    # PED-ANOVA compares the best configs' values with all configs': Optuna's top 10 %, but at least the
    # best 3 (2.5 rounds up to 3 whatever the float error), since one or two configs are no distribution.
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 2.5 / len(trials)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def importance_line(result: dict[str, float] | str) -> str:
    """The summary's importance sentence: each key's importance, largest first, or why there is none."""
    if isinstance(result, str):
        return f"Hyperparameter importance: not estimated ({result})."
    ranked = ", ".join(f"{key} {value:.2f}" for key, value in result.items())
    return (
        f"Hyperparameter importance (Optuna's PED-ANOVA, 0..1): {ranked}. {next(iter(result))} mattered most."
    )


def write_tensorboard(
    sweep_dir: Path, jobs: list[JobResult], keys: list[str], declared: dict, objective: Objective
) -> None:
    """The sweep's own TensorBoard run (SWEEP_RUN): the HParams experiment (each swept key's domain and
    a `status` column; the metrics) and the objective of each job in the order they finished."""
    domains = _experiment_domains(jobs, keys, declared)
    domains["status"] = sorted({Status.OK.value} | {j.status.value for j in jobs})
    finished = sorted((j for j in jobs if j.metrics), key=lambda j: j.finished_at)
    values = [j.metrics.get("objective") for j in finished]
    write_sweep_run(sweep_dir / SWEEP_RUN, domains, tuple(METRIC_TAGS), values, objective.better)


def _experiment_domains(jobs: list[JobResult], keys: list[str], declared: dict) -> dict[str, list | Interval]:
    """HParams domains: the declared list or interval, else the values the jobs took; numbers as floats."""
    domains: dict[str, list | Interval] = {}
    for key in keys:
        domain = declared.get(key)
        if domain is None:
            domain = sorted({j.params[key] for j in jobs if key in j.params})
        if isinstance(domain, list):
            as_numbers = [_number(str(v)) for v in domain]
            domain = as_numbers if all(n is not None for n in as_numbers) else [str(v) for v in domain]
        domains[key] = domain
    return domains


def main(argv: list[str] | None = None) -> int:
    """`python -m sweeper.summary SWEEP_DIR`: rewrite a sweep's summary; exit 2 when there is no sweep."""
    parser = argparse.ArgumentParser(prog="python -m sweeper.summary", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. multirun/2026-11-28/10-00-00")
    parser.add_argument("--top", type=int, default=5, help="rows to print (all are written)")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        summarize(args.sweep_dir, top=args.top)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

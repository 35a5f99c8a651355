"""The sweep summary on job folders as finished sweeps leave them: importance, table, TensorBoard runs.

No training and no subprocess: each job folder is written as Hydra and sweeper leave it (its name from
`config.job_name`, Hydra's `.hydra/overrides.yaml`, metrics.json by `write_metrics`, TensorBoard events by
`RunWriter`), beside the sweep's `multirun.yaml`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from sweeper import config, summary
from sweeper.record.writer import RunWriter, read_metrics, write_metrics
from sweeper.status import Status

FIXED = ["data=synthetic", "max_steps=100"]  # what every job shares
GRID_LRS = ["0.0001", "0.0002", "0.0005", "0.001", "0.002", "0.005", "0.01", "0.02", "0.05"]
GRID_REGS = ["0.1", "1.0", "10.0"]
BEST_LR = 0.001


def accuracy_of(lr: float) -> float:
    """A val accuracy that depends on lr alone: highest at BEST_LR, falling with the log distance to it."""
    return 0.5 - 0.04 * (math.log10(lr) - math.log10(BEST_LR)) ** 2


def write_multirun(sweep_dir: Path, sweep: list[str], params: dict[str, str] | None = None) -> None:
    """The sweep's multirun.yaml as Hydra's sweepers write it, with what the summary reads of it: the
    command line's overrides and `hydra.sweeper.params` (where Optuna's search space may be)."""
    record = {"hydra": {"sweeper": {"params": params}, "overrides": {"task": [*sweep, *FIXED]}}}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(record), sweep_dir / config.MULTIRUN_RECORD)


def write_job(sweep_dir: Path, overrides: list[str], val_accuracy: float) -> Path:
    """A finished (ok) job's folder, named as the sweep names it."""
    overrides = [*overrides, *FIXED]
    folder = sweep_dir / config.job_name(overrides, str(sweep_dir))
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    metrics = {
        "status": Status.OK.value,
        "steps": 100,
        "loss": 1.5,
        "train_accuracy": val_accuracy,
        "val_accuracy": val_accuracy,
        "test_accuracy": val_accuracy - 0.01,
        "objective": val_accuracy,
        "wall_time_s": 1.0,
    }
    write_metrics(folder, metrics)
    return folder


def optuna_importance(trials: list[tuple[dict, dict, float]]) -> dict[str, float]:
    """Optuna's own PED-ANOVA importance (its default top 10 %) of (params, distributions, value) trials."""
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(params=p, distributions=d, value=v) for p, d, v in trials])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def summary_importance(sweep_dir: Path) -> dict[str, float]:
    """The importance the summary estimates for the sweep in `sweep_dir`, over its table's keys."""
    jobs = summary.read_jobs(sweep_dir)
    domains = summary.sweep_domains(sweep_dir)
    keys = [k for k in summary.varied_keys(jobs, list(domains)) if k != summary.SEED_KEY]
    result = summary.importance(summary.group(jobs), keys, domains)
    assert isinstance(result, dict), result
    return result


def assert_summary_shows(sweep_dir: Path, expected: dict[str, float]) -> None:
    text = (sweep_dir / "summary.md").read_text()
    ranked = ", ".join(f"{key} {value:.2f}" for key, value in expected.items())
    assert f"Optuna's PED-ANOVA, 0..1): {ranked}. lr mattered most." in text


@pytest.fixture
def grid_sweep(tmp_path) -> tuple[Path, dict[tuple[str, str], float]]:
    """The article's kind of grid, 9 lr x 3 reg x 2 seeds, where only lr matters (and seeds add noise):
    the sweep folder and each config's mean val accuracy over its seeds."""
    sweep_dir = tmp_path / "grid"
    write_multirun(sweep_dir, [f"lr={','.join(GRID_LRS)}", f"reg={','.join(GRID_REGS)}", "seed=0,1"])
    noise = np.random.default_rng(0).normal(0.0, 0.001, (len(GRID_LRS), len(GRID_REGS), 2))
    means = {}
    for i, lr in enumerate(GRID_LRS):
        for j, reg in enumerate(GRID_REGS):
            accuracies = [accuracy_of(float(lr)) + noise[i, j, seed] for seed in (0, 1)]
            for seed, accuracy in enumerate(accuracies):
                write_job(sweep_dir, [f"lr={lr}", f"reg={reg}", f"seed={seed}"], accuracy)
            means[lr, reg] = statistics.fmean(accuracies)
    return sweep_dir, means


def test_grid_importance_is_optunas_ped_anova_over_the_configs_mean_objectives(grid_sweep):
    sweep_dir, means = grid_sweep
    lr_values, reg_values = (optuna.distributions.CategoricalDistribution(v) for v in (GRID_LRS, GRID_REGS))
    trials = [
        ({"lr": lr, "reg": reg}, {"lr": lr_values, "reg": reg_values}, v) for (lr, reg), v in means.items()
    ]
    expected = optuna_importance(trials)  # 27 configs: the summary's top quantile is Optuna's default

    got = summary_importance(sweep_dir)
    assert list(got) == list(expected) == ["lr", "reg"]  # largest first
    assert got == pytest.approx(expected, abs=1e-9)
    assert got["lr"] > 0.8 > got["reg"]

    rows = summary.summarize(sweep_dir, echo=False)
    assert len(rows) == 27 and rows[0].params["lr"] == str(BEST_LR) and len(rows[0].jobs) == 2
    assert_summary_shows(sweep_dir, expected)


def test_interval_importance_uses_the_distributions_optuna_sampled_from(tmp_path):
    # An Optuna search: lr log-uniform, reg uniform (no log tag), 40 trials at random; lr alone matters.
    space = {"lr": "tag(log, interval(0.0001, 0.01))", "reg": "interval(0.01, 10.0)"}
    write_multirun(tmp_path, ["sweep=optuna"], params=space)
    distributions = {
        "lr": optuna.distributions.FloatDistribution(0.0001, 0.01, log=True),
        "reg": optuna.distributions.FloatDistribution(0.01, 10.0, log=False),
    }
    rng = np.random.default_rng(0)
    trials = []
    for lr, reg in zip(10 ** rng.uniform(-4, -2, 40), rng.uniform(0.01, 10.0, 40), strict=True):
        write_job(tmp_path, [f"lr={float(lr)!r}", f"reg={float(reg)!r}"], accuracy_of(lr))
        trials.append(({"lr": float(lr), "reg": float(reg)}, distributions, accuracy_of(lr)))
    expected = optuna_importance(trials)

    got = summary_importance(tmp_path)
    assert got == pytest.approx(expected, abs=1e-9) and list(got) == list(expected)
    assert got["lr"] > 0.8 > got["reg"]
    summary.summarize(tmp_path, echo=False)
    assert_summary_shows(tmp_path, expected)


def test_each_job_folder_is_a_run_and_the_sweep_run_holds_the_only_experiment(grid_sweep):
    sweep_dir, _ = grid_sweep
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    for folder in jobs:  # the events a finished job leaves, in its own folder
        writer = RunWriter(folder)
        writer.final(read_metrics(folder))
        writer.session(summary.parse_params(OmegaConf.load(folder / ".hydra" / "overrides.yaml")), Status.OK)
        writer.close()
    job_files = {p: p.stat().st_mtime_ns for folder in jobs for p in folder.rglob("*")}
    summary.summarize(sweep_dir, echo=False)
    summary.summarize(sweep_dir, echo=False)  # rewritten, as every rerun of a sweep does

    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    runs.Reload()
    assert sorted(runs.Runs()) == sorted([p.name for p in jobs] + [summary.SWEEP_RUN])  # nothing appended
    hparams = runs.PluginRunToTagToContent("hparams")
    experiments = [run for run, tags in hparams.items() if "_hparams_/experiment" in tags]
    assert experiments == [summary.SWEEP_RUN]
    assert all("_hparams_/session_start_info" in hparams[p.name] for p in jobs)
    assert {p: p.stat().st_mtime_ns for folder in jobs for p in folder.rglob("*")} == job_files
    assert len(list((sweep_dir / summary.SWEEP_RUN).iterdir())) == 1  # the earlier summary's replaced
    assert not list(sweep_dir.rglob("tb"))


def test_a_pools_occupancies_come_from_its_members_records():
    def member(
        pool_id: int, joined: int, left: int, gflop: float | None = None, computed: float | None = None
    ):
        pool = {"id": pool_id, "slots": 2, "joined": joined, "left": left}
        if gflop is not None:
            pool |= {"gflop": gflop, "gflop_computed": computed}
        return {"timings": {"pool": pool}}

    # Pool 0: two rows over 300 program steps, one member padded to twice its width while it trained.
    padded = [member(0, 0, 300, 30.0, 30.0), member(0, 0, 100, 5.0, 10.0), member(0, 100, 200, 10.0, 10.0)]
    older = [member(1, 0, 100), member(1, 0, 100)]  # recorded before compute occupancy was
    first, second = summary.pool_usage([*padded, *older, {"timings": {}}, None])
    assert (first.number, first.jobs, first.program_steps, first.trained) == (0, 3, 300, 500)
    assert first.occupancy == pytest.approx(500 / 600)
    assert first.compute_occupancy == pytest.approx(45 / 50)
    assert second.compute_occupancy is None and second.occupancy == 1.0
    lines = summary.pool_lines([type("Job", (), {"metrics": m})() for m in padded])
    assert "slot occupancy 0.83 (member-steps trained / slot-steps), compute occupancy 0.90" in lines[0]

"""Bigger sweeps with Hydra's own plugins: Optuna (and resuming a study), joblib, submitit, SLURM config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import FAST, ROOT, compose_config, job_metrics, results, run_cli
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from sweeper.callbacks import configure_parallel_workers
from sweeper.trial import storage

pytestmark = pytest.mark.slow
SWEEP = [*FAST, "max_steps=100"]


def completed_trials(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="sweeper", storage=storage(str(sweep_dir / "optuna.journal")))
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_optuna_study_searches_logs_and_compares_in_tensorboard(tmp_path):
    unfixed = [o for o in SWEEP if not o.startswith("hidden=")]  # let Optuna choose `hidden` too
    result = run_cli(
        "-m", "sweep=optuna", "hydra.sweeper.n_trials=3", *unfixed, f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    metrics = job_metrics(tmp_path)
    assert len(metrics) == 3 and all(m["status"] == "ok" for m in metrics.values())
    trials = completed_trials(tmp_path)
    assert sorted(t.value for t in trials) == sorted(m["objective"] for m in metrics.values())
    for trial in trials:
        assert 0.0002 <= trial.params["lr"] <= 0.0025 and 0.03 <= trial.params["reg"] <= 3.0
        assert trial.params["hidden"] in (120, 240, 480)
    assert (tmp_path / "summary.md").is_file() and "Best config" in result.stdout

    events = EventAccumulator(str(tmp_path / "sweep_progress"))
    events.Reload()
    content = events.SummaryMetadata("_hparams_/experiment").plugin_data.content
    infos = {h.name: h for h in plugin_data_pb2.HParamsPluginData.FromString(content).experiment.hparam_infos}
    assert (infos["lr"].domain_interval.min_value, infos["lr"].domain_interval.max_value) == (0.0002, 0.0025)
    assert (infos["reg"].domain_interval.min_value, infos["reg"].domain_interval.max_value) == (0.03, 3.0)
    assert [v.number_value for v in infos["hidden"].domain_discrete.values] == [120.0, 240.0, 480.0]


def test_an_interrupted_optuna_study_continues_to_its_total(tmp_path):
    args = [
        "-m",
        "sweep=optuna",
        "hydra.sweeper.n_trials=4",
        *FAST,
        "max_steps=300",
        "hidden=16",
        f"hydra.sweep.dir={tmp_path}",
    ]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    # The third trial's folder appears once Optuna has been told the second trial's result.
    while len(list(tmp_path.glob("*/.hydra"))) < 3:
        assert process.poll() is None and time.monotonic() < deadline, "study ended before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    first = {t.number: t.params for t in completed_trials(tmp_path)}
    assert len(first) == 2

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f": {len(first)} finished trials, {4 - len(first)} to run (n_trials=4)" in rerun.stdout
    trials = completed_trials(tmp_path)
    assert len(trials) == 4  # the study's total, not 4 more
    assert {t.number: t.params for t in trials if t.number in first} == first  # earlier trials kept
    finished = [m for m in job_metrics(tmp_path).values() if m["status"] == "ok"]
    assert len(finished) >= 4  # the reseeded sampler proposed new configs, not the first attempt's again


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("basic")
    result = run_cli("-m", *SWEEP, "hidden=16,32", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    return sweep_dir


@pytest.mark.parametrize(
    "launcher",
    [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]],
    ids=["joblib", "submitit_local"],
)
def test_process_launchers_give_the_same_job_outputs(tmp_path, basic_sweep, launcher):
    result = run_cli("-m", *SWEEP, "hidden=16,32", *launcher, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    expected, got = job_metrics(basic_sweep), job_metrics(tmp_path)
    assert got.keys() == expected.keys()
    for name in expected:
        assert results(got[name]) == results(expected[name]), name
        for part in (".hydra/overrides.yaml", "checkpoints/step_100.pkl", "run.log"):
            assert (tmp_path / name / part).is_file(), part
        assert list((tmp_path / name).glob("events.out.tfevents.*"))
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3  # header + one row per job


def test_joblib_workers_get_thread_limits_and_on_demand_gpu_memory(monkeypatch):
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "XLA_FLAGS",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
        "XLA_PYTHON_CLIENT_MEM_FRACTION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    joblib = OmegaConf.create(
        {
            "hydra": {
                "launcher": {
                    "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
                    "n_jobs": 4,
                }
            }
        }
    )
    env = configure_parallel_workers(joblib)
    assert env["OMP_NUM_THREADS"] == "2" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.23" and "XLA_FLAGS" not in env
    assert os.environ["OMP_NUM_THREADS"] == "2"  # set for the workers to inherit
    monkeypatch.delenv("OMP_NUM_THREADS")
    joblib.hydra.launcher.n_jobs = 8
    assert "--xla_cpu_multi_thread_eigen=false" in configure_parallel_workers(joblib)["XLA_FLAGS"]
    basic = OmegaConf.create({"hydra": {"launcher": {"_target_": "hydra._internal.BasicLauncher"}}})
    assert configure_parallel_workers(basic) == {}


def test_slurm_launcher_config_composes_with_requeue_and_sane_defaults():
    cfg = compose_config("hydra/launcher=slurm", return_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.timeout_min == 30 and launcher.cpus_per_task == 4 and launcher.max_num_timeout == 3
    assert any("XLA_PYTHON_CLIENT_PREALLOCATE=false" in line for line in launcher.setup)

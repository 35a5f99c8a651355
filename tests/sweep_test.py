"""Multirun sweeps: job layout, summary, TensorBoard comparison, divergence, resume after SIGKILL."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, ROOT, kill_when, results, run_cli, tensorboard_server

from sweeper import summary
from sweeper.record import checkpoint

pytestmark = pytest.mark.slow
SWEEP = [*FAST, "max_steps=100"]
JOBS = ["hidden=16,seed=0", "hidden=16,seed=1", "hidden=32,seed=0", "hidden=32,seed=1"]


def job_dir(sweep: Path, name: str) -> Path:
    """The job folder whose name has `name`'s parts (names carry the swept keys only)."""
    parts = set(name.split(","))
    (found,) = [p for p in sweep.iterdir() if p.is_dir() and parts <= set(p.name.split(","))]
    return found


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real 4-job multirun over hidden x seed, shared by the tests that inspect it."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    result = run_cli("-m", *SWEEP, "hidden=16,32", "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    return sweep_dir, result


def test_jobs_are_named_by_their_overrides(sweep):
    sweep_dir, result = sweep
    names = sorted(p.name for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())
    assert len(names) == 4 and all("=" in n for n in names)
    for name in JOBS:
        folder = job_dir(sweep_dir, name)
        assert metrics_of(folder)["status"] == "ok"
        assert (folder / "checkpoints" / "step_100.pkl").is_file()
        assert list(folder.glob("events.out.tfevents.*")) and not (folder / "tb").exists()
    assert "job 1 of 4" in result.stdout and "job 4 of 4 done" in result.stdout and "left" in result.stdout


def test_summary_groups_seeds_and_names_the_best_config(sweep):
    sweep_dir, result = sweep
    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert [r["hidden"] for r in rows] in (["16", "32"], ["32", "16"]) and "seed" not in rows[0]
    for row in rows:
        vals = [
            metrics_of(job_dir(sweep_dir, f"hidden={row['hidden']},seed={s}"))["val_accuracy"] for s in (0, 1)
        ]
        assert row["seeds"] == "2" and row["status"] == "ok"
        assert float(row["val_accuracy_mean"]) == pytest.approx(sum(vals) / 2, abs=1e-5)
        assert float(row["val_accuracy_std"]) == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5, abs=1e-5)
    assert float(rows[0]["val_accuracy_mean"]) >= float(rows[1]["val_accuracy_mean"])
    best = rows[0]["hidden"]
    assert f"hidden={best}" in result.stdout.split("Best config")[1].splitlines()[1]
    assert "python run.py" in (sweep_dir / "summary.md").read_text()
    assert (sweep_dir / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_regenerates_from_the_folder(sweep):
    sweep_dir, _ = sweep
    before = (sweep_dir / "summary.csv").read_text()
    for name in ("summary.csv", "summary.md", "summary.png"):
        (sweep_dir / name).unlink()
    result = subprocess.run(
        [sys.executable, "-m", "sweeper.summary", str(sweep_dir)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "summary.csv").read_text() == before
    assert (sweep_dir / "summary.png").is_file() and "Best config" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "sweeper.summary", str(sweep_dir / "nope")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_tensorboard_serves_runs_scalars_and_the_hparams_experiment(sweep):
    sweep_dir, _ = sweep
    with tensorboard_server(sweep_dir, runs=5) as (get, runs):
        # Every run under its job's name, nothing appended, plus the sweep's own run holding the experiment.
        assert sorted(runs) == sorted([job_dir(sweep_dir, n).name for n in JOBS] + [summary.SWEEP_RUN])
        tags = get("/plugin/scalars/tags")
        for name in JOBS:
            assert {"loss/train", "accuracy/train", "accuracy/val", "accuracy/test"} <= tags[
                job_dir(sweep_dir, name).name
            ].keys()

        experiment = get("/plugin/hparams/experiment", {"experimentName": ""})
        domains = {h["name"]: h.get("domainDiscrete") for h in experiment["hparamInfos"]}
        assert domains == {"hidden": [16.0, 32.0], "seed": [0.0, 1.0], "status": ["ok"]}
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} >= {
            "accuracy/val",
            "accuracy/test",
            "loss/train",
        }

        groups = get(
            "/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "startIndex": 0,
                "sliceSize": 100,
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [{"hparam": "hidden"}, {"hparam": "seed"}],
            },
        )["sessionGroups"]
        assert len(groups) == 4
        for group in groups:
            (session,) = group["sessions"]
            assert session["status"] == "STATUS_SUCCESS"
            folder = sweep_dir / session["name"]
            values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
            expected = metrics_of(folder)
            assert values["accuracy/val"] == pytest.approx(expected["val_accuracy"], abs=1e-6)
            assert values["accuracy/test"] == pytest.approx(expected["test_accuracy"], abs=1e-6)
            assert f"hidden={int(group['hparams']['hidden'])}" in folder.name


def test_a_sweep_with_a_diverged_job_and_no_crash_exits_zero(tmp_path):
    # (A crashed job makes the sweep exit 1: tensorboard_test's mixed sweep.)
    result = run_cli("-m", *SWEEP, "lr=0.001,10", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr
    ok, diverged = (metrics_of(job_dir(tmp_path, f"lr={lr}")) for lr in ("0.001", "10"))
    assert ok["status"] == "ok" and ok["objective"] > 0.25
    assert diverged["status"] == "diverged" and diverged["objective"] == 0.0
    assert diverged["val_accuracy"] is None and diverged["steps"] < 100  # stopped where the loss went NaN
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(r["lr"], r["status"]) for r in rows] == [("0.001", "ok"), ("10", "diverged")]
    assert float(rows[0]["val_accuracy_mean"]) == pytest.approx(ok["val_accuracy"], abs=1e-5)
    assert rows[1]["val_accuracy_mean"] == ""
    text = (tmp_path / "summary.md").read_text()
    assert (
        "2 jobs in 2 configs: 1 ok, 1 diverged; ranked by val accuracy (max)." in text
        and "Crashed jobs" not in text
    )


def test_rerun_after_sigkill_skips_finished_jobs_and_resumes_the_interrupted_one(tmp_path):
    args = ["-m", *FAST, "max_steps=600", "hidden=16,32,48", "histograms=false"]
    whole = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr

    killed = tmp_path / "killed"
    kill_when(
        [*args, f"hydra.sweep.dir={killed}"],
        lambda: list(killed.glob("*hidden=32*/checkpoints/step_200.pkl")),
    )
    first = job_dir(killed, "hidden=16")
    second = job_dir(killed, "hidden=32")
    assert metrics_of(first)["status"] == "ok" and not (second / "metrics.json").exists()
    assert not list(killed.glob("*hidden=48*/metrics.json"))
    partial = summary.summarize(killed, echo=False)  # a killed sweep still summarises
    assert sorted(r.status for r in partial) == ["ok", "unfinished"]  # hidden=48 never started
    first_mtime = (first / "metrics.json").stat().st_mtime_ns

    rerun = run_cli(*args, f"hydra.sweep.dir={killed}")
    assert rerun.returncode == 0, rerun.stderr
    assert (first / "metrics.json").stat().st_mtime_ns == first_mtime  # not recomputed
    assert "finished in an earlier attempt (status ok): skipped" in rerun.stdout
    assert "resumed from" in rerun.stdout and "step_" in rerun.stdout
    for name in ("hidden=16", "hidden=32", "hidden=48"):
        a, b = job_dir(tmp_path / "whole", name), job_dir(killed, name)
        assert results(metrics_of(a)) == results(metrics_of(b)), name
        ca, cb = (checkpoint.load(d / "checkpoints" / "step_600.pkl") for d in (a, b))
        assert (ca["params"]["layer1"]["kernel"] == cb["params"]["layer1"]["kernel"]).all()
    rows = list(csv.DictReader((killed / "summary.csv").open()))
    assert sorted(r["hidden"] for r in rows) == ["16", "32", "48"] and {r["status"] for r in rows} == {"ok"}

"""A sweep with an ok, a diverged and a crashed job: the failures isolated, and comparing the jobs in a
real TensorBoard as a user sees it: final values, a status column, runs named by their jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST, run_cli, tensorboard_server

from sweeper import summary
from sweeper.record.writer import MISSING_ACCURACY, MISSING_LOSS

pytestmark = pytest.mark.slow
METRICS = {"accuracy/val": "val_accuracy", "accuracy/test": "test_accuracy"}
METRICS |= {"accuracy/train": "train_accuracy", "loss/train": "loss"}
METRICS |= {"loss/val": "val_loss", "loss/test": "test_loss", "loss/train_set": "train_loss"}


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory):
    """One job of each kind: ok, diverged (lr=10) and crashed (lr=-1), hidden fixed."""
    sweep_dir = tmp_path_factory.mktemp("tb") / "s"
    args = ["-m", *FAST, "max_steps=100", "lr=0.001,10,-1", f"hydra.sweep.dir={sweep_dir}"]
    result = run_cli(*args)
    assert result.returncode == 1, result.stderr  # a job crashed: said, after the summary
    return sweep_dir, args, result


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_diverged_and_crashed_jobs_do_not_stop_the_sweep(mixed_sweep):
    sweep_dir, _, result = mixed_sweep
    assert f"error: 1 job(s) crashed, see {sweep_dir / 'summary.md'}" in result.stderr
    ok, diverged, crashed = (metrics_of(sweep_dir / f"lr={lr}") for lr in ("0.001", "10", "-1"))
    assert ok["status"] == "ok" and ok["objective"] > 0.25
    assert diverged["status"] == "diverged" and diverged["objective"] == 0.0
    assert crashed["status"] == "crashed" and crashed["objective"] == 0.0
    assert "lr must be > 0" in crashed["error"]
    rows = summary.group(summary.read_jobs(sweep_dir))
    assert rows[0].status == "ok" and {r.status for r in rows[1:]} == {"diverged", "crashed"}
    text = (sweep_dir / "summary.md").read_text()
    assert "Crashed jobs" in text and "lr must be > 0" in text


def test_hparams_shows_final_values_and_status_for_every_job(mixed_sweep):
    sweep_dir, _, _ = mixed_sweep
    with tensorboard_server(sweep_dir, runs=4) as (get, runs):
        # Each run named by its job (the swept key alone), nothing appended; the sweep's own run has
        # data of its own.
        assert sorted(runs) == ["lr=-1", "lr=0.001", "lr=10", summary.SWEEP_RUN]
        tags = get("/plugin/scalars/tags")
        assert all(tags[run] for run in runs)  # no run without data
        assert set(tags[summary.SWEEP_RUN]) == {"sweep/objective", "sweep/best_objective"}

        experiment = get("/plugin/hparams/experiment", {"experimentName": ""})
        domains = {h["name"]: h.get("domainDiscrete") for h in experiment["hparamInfos"]}
        assert domains == {"lr": [0.001, 10.0, -1.0], "status": ["crashed", "diverged", "ok"]}
        assert {m["name"]["tag"] for m in experiment["metricInfos"]} == set(METRICS)

        body = {"experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [{"hparam": "lr"}]}
        body["allowedStatuses"] = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        groups = get("/plugin/hparams/session_groups", body)["sessionGroups"]
    assert len(groups) == 3
    seen = set()
    for group in groups:
        (session,) = group["sessions"]
        metrics = metrics_of(sweep_dir / session["name"])
        assert group["hparams"]["status"] == metrics["status"]  # the status column
        seen.add(metrics["status"])
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert values.keys() == METRICS.keys()  # every metric: no view leaves the job out
        for tag, key in METRICS.items():
            missing = MISSING_LOSS if tag.startswith("loss") else MISSING_ACCURACY
            expected = missing if metrics[key] is None else metrics[key]
            assert values[tag] == pytest.approx(expected, abs=1e-6), (metrics["status"], tag)
    assert seen == {"ok", "diverged", "crashed"}


def test_the_graphs_tab_lists_every_job_that_trained(mixed_sweep):
    sweep_dir, _, _ = mixed_sweep
    with tensorboard_server(sweep_dir, runs=4) as (get, _):
        graphs = get("/plugin/graphs/info")
    # The crashed job stopped before it built a model: it has no graph, and the sweep's own run neither.
    assert {run for run, info in graphs.items() if info["run_graph"]} == {"lr=0.001", "lr=10"}


def test_the_summary_says_why_it_estimates_no_importance_from_three_configs(mixed_sweep):
    # (The importance itself, against Optuna's: summary_test.)
    sweep_dir, _, _ = mixed_sweep
    text = (sweep_dir / "summary.md").read_text()
    assert "Hyperparameter importance: not estimated (needs at least 4 configs with a result, has 3)" in text


def test_a_rerun_with_other_fixed_overrides_is_refused(mixed_sweep):
    sweep_dir, args, _ = mixed_sweep
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}
    result = run_cli(*[a.replace("max_steps=100", "max_steps=200") for a in args])
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "holds a job trained with other overrides" in line
    assert "max_steps=100; now max_steps=200" in line
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")} == before  # nothing touched

"""Comparing runs in TensorBoard as a user sees it: final values, a status column, short run names."""

from __future__ import annotations

import json

import pytest
from conftest import FAST, run_cli, tensorboard_server

from sweeper.writer import MISSING_ACCURACY, MISSING_LOSS

pytestmark = pytest.mark.slow
METRICS = {"accuracy/val": "val_accuracy", "accuracy/test": "test_accuracy"}
METRICS |= {"accuracy/train": "train_accuracy", "loss/train": "loss"}


@pytest.fixture(scope="module")
def mixed_sweep(tmp_path_factory):
    """One job of each kind: ok, diverged (lr=10) and crashed (lr=-1), hidden fixed."""
    sweep_dir = tmp_path_factory.mktemp("tb") / "s"
    args = ["-m", *FAST, "max_steps=100", "lr=0.001,10,-1", f"hydra.sweep.dir={sweep_dir}"]
    result = run_cli(*args)
    assert result.returncode == 1  # a job crashed: said, after the summary
    return sweep_dir, args


def test_hparams_shows_final_values_and_status_for_every_job(mixed_sweep):
    sweep_dir, _ = mixed_sweep
    with tensorboard_server(sweep_dir, runs=4) as (get, runs):
        # Named by the swept key alone; the sweep's own run has data of its own.
        assert sorted(runs) == ["lr=-1/tb", "lr=0.001/tb", "lr=10/tb", "sweep_progress"]
        tags = get("/plugin/scalars/tags")
        assert all(tags[run] for run in runs)  # no run without data
        assert set(tags["sweep_progress"]) == {"sweep/objective", "sweep/best_objective"}

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
        folder = sweep_dir / session["name"].removesuffix("/tb")
        metrics = json.loads((folder / "metrics.json").read_text())
        assert group["hparams"]["status"] == metrics["status"]  # the status column
        seen.add(metrics["status"])
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert values.keys() == METRICS.keys()  # every metric: no view leaves the job out
        for tag, key in METRICS.items():
            missing = MISSING_LOSS if tag.startswith("loss") else MISSING_ACCURACY
            expected = missing if metrics[key] is None else metrics[key]
            assert values[tag] == pytest.approx(expected, abs=1e-6), (metrics["status"], tag)
    assert seen == {"ok", "diverged", "crashed"}


def test_the_summary_says_which_hyperparameter_mattered(mixed_sweep):
    sweep_dir, _ = mixed_sweep
    text = (sweep_dir / "summary.md").read_text()
    assert "Hyperparameter importance: not estimated (needs at least 4 configs with a result, has 3)" in text


def test_a_rerun_with_other_fixed_overrides_is_refused(mixed_sweep):
    sweep_dir, args = mixed_sweep
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")}
    result = run_cli(*[a.replace("max_steps=100", "max_steps=200") for a in args])
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "holds a job trained with other overrides" in line
    assert "max_steps=100; now max_steps=200" in line
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/metrics.json")} == before  # nothing touched

"""Faults and bad input: stop signals, two sweeps on one folder, damaged files, impossible sizes."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, ROOT, compose_config, job_metrics, results, run_cli

from sweeper import memory, train
from sweeper.record import checkpoint
from sweeper.train.plan import plan

RUN = [*FAST, "histograms=false", "max_steps=1000"]


def start(args: list[str], log: Path) -> subprocess.Popen:
    out = log.open("w")
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, stdout=out, stderr=out)


def wait_for(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.01)


def checkpoint_steps(folder: Path) -> list[int]:
    return [step for step, _ in checkpoint.all_steps(folder / "checkpoints")]


def same_parameters(a: Path, b: Path, step: int) -> None:
    pa, pb = (checkpoint.load(d / "checkpoints" / f"step_{step}.pkl") for d in (a, b))
    for layer in ("layer1", "layer2"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(pa["params"][layer][name], pb["params"][layer][name])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2])
def test_a_stop_signal_checkpoints_where_the_run_is_and_the_rerun_continues_exactly(tmp_path, signum):
    whole = run_cli(*RUN, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "stopped"
    process = start([*RUN, f"hydra.run.dir={run}"], tmp_path / "out.txt")
    wait_for(lambda: 300 in checkpoint_steps(run), process)  # between checkpoints: steps 300 .. 400
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    printed = (tmp_path / "out.txt").read_text()
    assert f"stopped by {signal.Signals(signum).name}" in printed and f"hydra.run.dir='{run}'" in printed
    metrics = json.loads((run / "metrics.json").read_text())
    stopped_at = metrics["steps"]
    assert metrics["status"] == "interrupted" and stopped_at == max(checkpoint_steps(run)) >= 300
    assert stopped_at % 50 == 0  # at a segment end: the segment under way when the signal came finished

    rerun = run_cli(*RUN, "resume=true", f"hydra.run.dir={run}")
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from {run / 'checkpoints' / f'step_{stopped_at}.pkl'}" in rerun.stdout  # nothing redone
    same_parameters(tmp_path / "whole", run, 1000)
    done = json.loads((run / "metrics.json").read_text())
    assert results(done) == results(json.loads((tmp_path / "whole" / "metrics.json").read_text()))
    assert [(a["from_step"], a["to_step"]) for a in done["attempts"]] == [(0, stopped_at), (stopped_at, 1000)]
    assert done["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in done["attempts"]), abs=0.01)


@pytest.mark.slow
def test_a_fused_sweep_stops_gracefully_and_resumes_exactly(tmp_path):
    args = ["-m", *RUN, "hidden=16,32", "lr=0.001,0.002", "hydra/launcher=fused", "hydra.launcher.widths=pad"]
    whole = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    sweep = tmp_path / "stopped"
    process = start([*args, f"hydra.sweep.dir={sweep}"], tmp_path / "out.txt")
    wait_for(lambda: len(list(sweep.glob("*/checkpoints/step_300.pkl"))) == 4, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    stopped = job_metrics(sweep)
    assert len(stopped) == 4 and {m["status"] for m in stopped.values()} == {"interrupted"}
    step = {m["steps"] for m in stopped.values()}
    assert len(step) == 1  # one program: every member at the same step, each with its checkpoint there
    assert all(max(checkpoint_steps(sweep / name)) == next(iter(step)) for name in stopped)

    rerun = run_cli(*args, f"hydra.sweep.dir={sweep}")
    assert rerun.returncode == 0, rerun.stderr
    assert f"from step {next(iter(step))}" in rerun.stdout
    for name in stopped:
        same_parameters(tmp_path / "whole" / name, sweep / name, 1000)


@pytest.mark.slow
def test_two_sweep_processes_on_one_folder_train_each_job_once(tmp_path):
    args = ["-m", *FAST, "max_steps=300", "histograms=false", "hidden=16,24,32", "lr=0.001,0.002"]
    args.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    first, second = (start(args, tmp_path / f"out{i}.txt") for i in (1, 2))
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    jobs = [p.parent for p in (tmp_path / "sweep").glob("*/.hydra")]
    assert len(jobs) == 6
    for job in jobs:
        assert (job / "run.log").read_text().count("step 0  loss") == 1  # trained by one process only
        assert len(list(job.glob("events.out.tfevents.*[0-9a-z]"))) == 3  # one stream, its graph, its session
        assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
    printed = (tmp_path / "out1.txt").read_text() + (tmp_path / "out2.txt").read_text()
    assert "is training this job: skipped here" in printed  # they met, and one passed the other's job
    assert "6 jobs, 6 ok" in (tmp_path / "sweep" / "summary.md").read_text() or "6 ok" in printed


@pytest.mark.slow
def test_a_damaged_metrics_json_reruns_only_that_job(tmp_path):
    args = ["-m", *FAST, "max_steps=100", "histograms=false", "hidden=16,32", f"hydra.sweep.dir={tmp_path}"]
    assert run_cli(*args).returncode == 0
    damaged = tmp_path / "hidden=16" / "metrics.json"
    damaged.write_text('{"status": "ok", "val_acc')  # cut short by a full disk
    kept = (tmp_path / "hidden=32" / "metrics.json").stat().st_mtime_ns
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{damaged} is damaged" in rerun.stdout and "the job counts as not finished" in rerun.stdout
    assert json.loads(damaged.read_text())["status"] == "ok"
    assert (tmp_path / "hidden=32" / "metrics.json").stat().st_mtime_ns == kept


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = compose_config(*FAST, "histograms=false", "max_steps=200")
    train.train_and_evaluate(cfg, tmp_path / "whole")
    train.train_and_evaluate(compose_config(*FAST, "histograms=false", "max_steps=100"), tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    good = (ckpts / "step_100.pkl").read_bytes()
    (ckpts / "step_150.pkl").write_bytes(good[: len(good) // 2])  # the newest, cut short
    resumed = train.train_and_evaluate(
        compose_config(*FAST, "histograms=false", "max_steps=200", "resume=true"), tmp_path / "run"
    )
    assert f"{ckpts / 'step_150.pkl'} is truncated" in caplog.text
    assert "trying an earlier checkpoint" in caplog.text
    assert "resumed from" in caplog.text and "step_100.pkl (step 100)" in caplog.text
    assert (ckpts / "step_150.pkl").is_file()  # left in place
    same_parameters(tmp_path / "whole", tmp_path / "run", 200)
    assert resumed["status"] == "ok"


@pytest.mark.slow
def test_an_impossible_size_is_refused_in_seconds_with_one_line(tmp_path):
    started = time.monotonic()
    result = run_cli("data=synthetic", "hidden=100000000", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and time.monotonic() - started < 30
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: hidden=100000000 needs about ") and " TB " in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fused_chunks_follow_the_memory_estimate(monkeypatch):
    cfgs = [compose_config(*FAST, f"lr={lr}") for lr in (1, 2, 3, 4, 5)]
    per_member = memory.member_bytes(cfgs[0])
    data = memory.dataset_bytes(cfgs[0].data)
    monkeypatch.setattr(memory, "available_bytes", lambda: (2 * (data + 2 * per_member), "test memory"))
    # Half the memory holds the data and two members: programs of at most two.
    assert [len(g) for g in plan(cfgs, pad_widths=True, max_batch=None).groups] == [2, 2, 1]
    assert [len(g) for g in plan(cfgs, pad_widths=True, max_batch=5, check_memory=False).groups] == [5]
    memory.check_fits(cfgs[0], members=4)  # all of it: four fit
    with pytest.raises(memory.ConfigError, match="for 20 fused runs of this model"):
        memory.check_fits(cfgs[0], members=20)

"""`hydra/launcher=slurm` (hydra_plugins/sweeper_slurm) on a real one-node SLURM (tests/slurm/cluster.py).

A sweep gives the basic launcher's results; a job preempted by USR2 or `scontrol requeue` is requeued
and resumes from the checkpoint it wrote at the signal, ending with an uninterrupted run's metrics and
parameters; a cancelled job ends the sweep with a record, a summary and exit status 1 instead of a hang,
without and with accounting (sacct). The cluster is installed (apt-get) and started where it can be:
elsewhere (not root, no apt) these tests skip with the reason, or fail where SWEEPER_SLURM_REQUIRED=1
(.ci/run sets it once it installed the packages). SWEEPER_SLURM_KEEP=1 keeps the cluster's folder (its
config and the daemons' logs). Without SLURM: that the launcher submits the sbatch script Hydra's own
launcher submits for the same config (stand-ins for sbatch, squeue and sacct, tests/slurm/fake.py),
its wait, and its import hygiene.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FAST, ROOT, job_metrics, results, run_cli
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from slurm.cluster import Cluster, Unavailable, ensure_installed
from slurm.fake import fake_slurm, launch, submitted

pytestmark = pytest.mark.slow

SWEEP = [*FAST, "max_steps=100"]
# The cluster has 2 CPUs and 64 GB: the launcher config's 4 CPUs would never be scheduled.
ON_SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
# About 4 s of training on 2 cores (segments of 50 steps); the tests signal it at its first checkpoint.
LONG = [*FAST, "hidden=16", "max_steps=3000"]
WAIT_S = 180  # for any one sweep; a hang fails here instead of holding the suite


def _unavailable(reason: str) -> None:
    if os.environ.get("SWEEPER_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM is required here (SWEEPER_SLURM_REQUIRED=1) but: {reason}")
    pytest.skip(reason)


def _cluster(accounting: bool):
    started = time.monotonic()
    try:
        installed_s = ensure_installed(accounting)
        cluster = Cluster(accounting=accounting).start()
    except Unavailable as reason:
        _unavailable(str(reason))
    print(
        f"\nSLURM cluster{' with accounting' if accounting else ''}: {time.monotonic() - started:.1f} s "
        f"(apt-get {installed_s:.1f} s, daemons {cluster.setup_s:.1f} s)"
    )
    yield cluster
    keep = os.environ.get("SWEEPER_SLURM_KEEP") == "1"  # its config and the daemons' logs, to debug
    cluster.stop(keep=keep)
    if keep:
        print(f"\nSLURM cluster folder kept: {cluster.root}")


@pytest.fixture(scope="module")
def cluster():
    yield from _cluster(accounting=False)


@pytest.fixture(scope="module")
def accounting_cluster(cluster):  # only where the plain cluster runs (it skips with it)
    yield from _cluster(accounting=True)


@pytest.fixture
def slurm(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # run_cli's subprocesses find the cluster
    return cluster


def slurm_job_id(job_folder: Path) -> str:
    """The SLURM id that trains a job (`123`, or `123_4` in an array), from its Hydra record."""
    return str(OmegaConf.load(job_folder / ".hydra" / "hydra.yaml").hydra.job.id)


def checkpoint_steps(job_folder: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in job_folder.glob("checkpoints/step_*.pkl"))


def flat_params(job_folder: Path, step: int) -> dict[str, np.ndarray]:
    from sweeper.record import checkpoint

    def flatten(tree, prefix=""):
        if isinstance(tree, dict):
            return {k: v for key in tree for k, v in flatten(tree[key], f"{prefix}/{key}").items()}
        return {prefix: np.asarray(tree)}

    return flatten(checkpoint.load(job_folder / "checkpoints" / f"step_{step}.pkl")["params"])


class Sweep:
    """`python run.py ARGS` in the background, its output in files (no pipe to fill)."""

    def __init__(self, args: list[str], folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.out, self.err = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, stdout=out, stderr=err
            )

    def until(self, ready, what: str, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while not (value := ready()):
            assert self.process.poll() is None, f"the sweep ended before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.output()}"
            time.sleep(0.02)
        return value

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the sweep did not end within {timeout} s (a hang?):\n{self.output()}")

    def output(self) -> str:
        return f"--- stdout\n{self.out.read_text()}\n--- stderr\n{self.err.read_text()}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# -- on a real cluster ---------------------------------------------------------------------------------


def test_a_slurm_sweep_gives_the_basic_launchers_results(slurm, tmp_path):
    basic = run_cli("-m", *SWEEP, "hidden=16,32", f"hydra.sweep.dir={tmp_path / 'basic'}")
    assert basic.returncode == 0, basic.stderr
    started = time.monotonic()
    on_slurm = run_cli("-m", *SWEEP, "hidden=16,32", *ON_SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}")
    print(f"2-job sweep on SLURM: {time.monotonic() - started:.1f} s")
    assert on_slurm.returncode == 0, on_slurm.stderr
    expected, got = job_metrics(tmp_path / "basic"), job_metrics(tmp_path / "slurm")
    assert got.keys() == expected.keys() == {"hidden=16", "hidden=32"}
    for name in expected:
        assert results(got[name]) == results(expected[name]), name
    ids = {slurm_job_id(tmp_path / "slurm" / name) for name in got}
    assert len(ids) == 2 and all(re.fullmatch(r"\d+_[01]", i) for i in ids), ids  # one array, two tasks
    for part in ("summary.md", "summary.csv", "summary.png"):
        assert (tmp_path / "slurm" / part).is_file(), part
    assert len((tmp_path / "slurm" / "summary.csv").read_text().splitlines()) == 3


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """LONG through the basic launcher: the run a preempted one must end up equal to."""
    sweep_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("-m", *LONG, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    (job,) = (p.parent for p in sweep_dir.glob("*/metrics.json"))
    return job


@pytest.mark.parametrize("how", ["usr2", "requeue"])
def test_a_preempted_job_is_requeued_and_resumes_from_the_checkpoint_at_the_signal(
    slurm, uninterrupted, tmp_path, how
):
    sweep_dir = tmp_path / "sweep"
    sweep = Sweep(["-m", *LONG, *ON_SLURM, f"hydra.sweep.dir={sweep_dir}"], tmp_path / "log")
    try:
        job = sweep.until(lambda: next((p.parent for p in sweep_dir.glob("*/checkpoints")), None), "a job")
        seen = sweep.until(lambda: checkpoint_steps(job), "a checkpoint")[-1]
        job_id = slurm_job_id(job)
        if how == "usr2":  # what `#SBATCH --signal=USR2@...` sends before the time limit
            slurm.run("scancel", "--signal=USR2", job_id)
        else:  # SIGTERM to the job's processes, then SIGKILL after KillWait
            slurm.run("scontrol", "requeue", job_id)
        signalled = time.monotonic()
        returncode = sweep.wait()
        print(
            f"{how}: signalled at step >= {seen}, the sweep ended {time.monotonic() - signalled:.1f} s later"
        )
    finally:
        sweep.stop()
    assert returncode == 0, sweep.output()

    metrics = json.loads((job / "metrics.json").read_text())
    assert results(metrics) == results(json.loads((uninterrupted / "metrics.json").read_text()))
    first, second = metrics["attempts"]  # interrupted at the signal, then requeued and resumed
    log = (job / "run.log").read_text()
    name = "SIGUSR2" if how == "usr2" else "SIGTERM"
    assert f"interrupted by {name} at step {first['to_step']}: checkpoint written" in log
    resumed = re.findall(r"resumed from \S*/checkpoints/step_(\d+)\.pkl \(step (\d+)\)", log)
    assert len(resumed) == 1, log
    step = int(resumed[0][0])
    # No more than the segment running at the signal is lost: the checkpoint written then is resumed.
    assert seen <= step == first["to_step"] == second["from_step"] < 3000
    expected, got = flat_params(uninterrupted, 3000), flat_params(job, 3000)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    submitted = sweep_dir / ".submitit"
    assert [p.name for p in submitted.iterdir() if p.is_dir()] == [job_id]  # requeued, not resubmitted
    if how == "usr2":  # submitit's handler, called after the checkpoint, requeued it
        assert f"Requeued job {job_id}" in (submitted / job_id / f"{job_id}_0_log.out").read_text()


@pytest.mark.parametrize("accounting", [False, True], ids=["no_accounting", "accounting"])
def test_a_cancelled_job_ends_the_sweep_with_a_record_and_a_summary(
    request, monkeypatch, tmp_path, accounting
):
    cluster = request.getfixturevalue("accounting_cluster" if accounting else "cluster")
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    sweep_dir = tmp_path / "sweep"
    lost_after_s = 5  # (15 by default) how long the launcher waits for a result once squeue drops a job
    args = [
        "-m",
        *FAST,
        "hidden=16",
        "max_steps=200,3000",
        *ON_SLURM,
        f"hydra.launcher.lost_after_s={lost_after_s}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = Sweep(args, tmp_path / "log")
    job, short = sweep_dir / "max_steps=3000", sweep_dir / "max_steps=200"
    try:
        sweep.until(lambda: checkpoint_steps(job), "a checkpoint of the long job")
        job_id = slurm_job_id(job)
        cluster.run("scancel", job_id)
        cancelled = time.monotonic()
        returncode = sweep.wait()
        ended_s = time.monotonic() - cancelled
        print(
            f"cancelled ({'with' if accounting else 'no'} accounting): the sweep ended {ended_s:.1f} s later"
        )
    finally:
        sweep.stop()
    output = sweep.output()
    assert returncode == 1, output
    last = sweep.err.read_text().strip().splitlines()[-1]
    assert last.startswith(
        "error: 1 SLURM job(s) ended without a result (cancelled, failed or lost): "
        f"{job_id} (max_steps=3000); "
    ), output
    assert last.endswith(f"run the same command with hydra.sweep.dir={sweep_dir} to resume them"), output
    state = "state CANCELLED" if accounting else "not in squeue, no state from sacct"
    assert f"SLURM job {job_id} ended without a result ({state}" in output
    assert ended_s < lost_after_s + 10 + 20, ended_s  # + KillWait + slack: waited out, not hung
    # The record: the job stopped gracefully on scancel's SIGTERM, and the summary has both jobs.
    assert json.loads((job / "metrics.json").read_text())["status"] == "interrupted"
    assert json.loads((short / "metrics.json").read_text())["status"] == "ok"
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and any(",interrupted," in r and "max_steps=3000" in r for r in rows), rows
    assert (sweep_dir / "summary.md").is_file() and (sweep_dir / "summary.png").is_file()

    rerun = run_cli(*args, timeout=WAIT_S)  # as the message says: the same command resumes it
    assert rerun.returncode == 0, rerun.stderr
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "ok" and len(metrics["attempts"]) == 2
    assert "finished in an earlier attempt" in (short / "run.log").read_text()


# -- fused groups on a real cluster (hydra/launcher=fused_slurm) ---------------------------------------

ON_FUSED_SLURM = ["hydra/launcher=fused_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]
GRID = ["hidden=16,32", "lr=0.001,0.002", "reg=0.1,0.2"]  # 8 configs, 4 of each width
# Two members of one width and schedule: one group, one SLURM job (about 6 s of training on 2 cores).
LONG_GROUP = [*FAST, "hidden=16", "max_steps=3000", "lr=0.001,0.002"]


def group_ids(sweep_dir: Path) -> dict[str, list[str]]:
    """The job folders each SLURM id trained, by id."""
    groups: dict[str, list[str]] = {}
    for folder in sorted(p.parent for p in sweep_dir.glob("*/metrics.json")):
        groups.setdefault(slurm_job_id(folder), []).append(folder.name)
    return groups


def _checkpointed(sweep_dir: Path, pattern: str, count: int) -> list[Path] | None:
    """The `count` job folders matching `pattern` once each has a checkpoint, else None."""
    folders = sorted(p.parent for p in sweep_dir.glob(f"{pattern}/checkpoints"))
    ready = len(folders) == count and all(checkpoint_steps(f) for f in folders)
    return folders if ready else None


def test_a_fused_grid_as_two_slurm_jobs_gives_the_local_fused_launchers_results(slurm, tmp_path):
    args = ["-m", *SWEEP, *GRID, "hydra.launcher.max_batch=4"]
    local = run_cli(*args, "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path / 'local'}")
    assert local.returncode == 0, local.stderr
    started = time.monotonic()
    on_slurm = run_cli(*args, *ON_FUSED_SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}")
    print(f"8 configs as fused SLURM jobs: {time.monotonic() - started:.1f} s")
    assert on_slurm.returncode == 0, on_slurm.stderr
    assert (
        "Launching 8 jobs as 2 SLURM job(s): 8 in fused groups, 0 alone, 0 finished before" in on_slurm.stdout
    )
    expected, got = job_metrics(tmp_path / "local"), job_metrics(tmp_path / "slurm")
    assert len(got) == 8 and got.keys() == expected.keys()
    for name in expected:
        assert results(got[name]) == results(expected[name]), name
        assert got[name]["timings"]["fused_jobs"] == 4, name
        assert (
            "fused with 4 jobs in one program (width" in (tmp_path / "slurm" / name / "run.log").read_text()
        )
    groups = group_ids(tmp_path / "slurm")  # one array of two tasks, a width each
    assert len(groups) == 2 and all(re.fullmatch(r"\d+_[01]", i) for i in groups), groups
    for names in groups.values():
        assert len(names) == 4 and len({n.split(",")[0] for n in names}) == 1, groups
    assert len((tmp_path / "slurm" / "summary.csv").read_text().splitlines()) == 9
    submitted = sorted((tmp_path / "slurm" / ".submitit").iterdir())
    rerun = run_cli(*args, *ON_FUSED_SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}")
    assert rerun.returncode == 0, rerun.stderr  # every job finished: read here, nothing submitted
    assert "Launching 8 jobs as 0 SLURM job(s): 0 in fused groups, 0 alone, 8 finished before" in rerun.stdout
    assert sorted((tmp_path / "slurm" / ".submitit").iterdir()) == submitted
    assert job_metrics(tmp_path / "slurm") == got


def test_a_fused_slurm_sweep_on_your_own_npz_finds_it_by_its_relative_path(slurm, tmp_path):
    from own_data_test import write_npz

    write_npz(tmp_path / "mine.npz")  # run from tmp_path: data.path is relative to it
    args = ["-m", "data=npz", "data.path=mine.npz", "data.val_size=100", "batch_size=50", "max_steps=100"]
    args += ["hidden=8,16", "lr=0.003,0.01", "histograms=false", "hydra.launcher.max_batch=4"]
    local = run_cli(*args, "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path / 'local'}", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    on_slurm = run_cli(*args, *ON_FUSED_SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}", cwd=tmp_path)
    assert on_slurm.returncode == 0, on_slurm.stderr
    expected, got = job_metrics(tmp_path / "local"), job_metrics(tmp_path / "slurm")
    assert len(got) == 4 and got.keys() == expected.keys()
    for name in expected:
        assert results(got[name]) == results(expected[name]), name


def test_a_fused_slurm_sweep_of_your_own_model_gives_the_local_fused_launchers_results(slurm, tmp_path):
    from own_model_test import EXAMPLE, write_tiny

    write_tiny(tmp_path / "tiny.npz")  # the example's ConvNet (BatchNorm, Dropout), its module on PYTHONPATH
    args = ["-m", "--config-dir", str(EXAMPLE / "my_conf"), "model=convnet", "data=npz", "data.path=tiny.npz"]
    args += ["data.val_size=60", "batch_size=20", "max_steps=40", "histograms=false", "optimizer=momentum"]
    args += ["model.channels=4,8", "optimizer.momentum=0.8,0.9", "lr=0.05"]
    env = {"PYTHONPATH": str(EXAMPLE)}
    local = run_cli(
        *args, "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path / 'local'}", cwd=tmp_path, env=env
    )
    assert local.returncode == 0, local.stderr
    on_slurm = run_cli(*args, *ON_FUSED_SLURM, f"hydra.sweep.dir={tmp_path / 'slurm'}", cwd=tmp_path, env=env)
    assert on_slurm.returncode == 0, on_slurm.stderr
    expected, got = job_metrics(tmp_path / "local"), job_metrics(tmp_path / "slurm")
    assert len(got) == 4 and got.keys() == expected.keys()
    for name in expected:
        assert results(got[name]) == results(expected[name]), name


def test_a_slurm_job_trains_its_configs_as_a_slot_pool_as_the_local_launcher_does(slurm, tmp_path):
    # Two widths in one job's pool of two rows: a program per width on the node's CPU, none padded.
    args = ["-m", *SWEEP, "hidden=16,32", "lr=0.001,100", "reg=0.1,1.0", "hydra.launcher.max_batch=2"]
    local = run_cli(*args, "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path / 'local'}")
    assert local.returncode == 0, local.stderr
    on_slurm = run_cli(
        *args, *ON_FUSED_SLURM, "hydra.launcher.per_job=8", f"hydra.sweep.dir={tmp_path / 'slurm'}"
    )
    assert on_slurm.returncode == 0, on_slurm.stderr
    assert "Launching 8 jobs as 1 SLURM job(s): 8 in fused groups" in on_slurm.stdout
    expected, got = job_metrics(tmp_path / "local"), job_metrics(tmp_path / "slurm")
    assert got.keys() == expected.keys() and len(got) == 8
    for name in expected:
        assert results(got[name]) == results(expected[name]), name
        assert got[name]["timings"]["pool"] == expected[name]["timings"]["pool"], name
        assert got[name]["timings"]["pool"]["gflop"] == got[name]["timings"]["pool"]["gflop_computed"], name
    assert len({m["timings"]["pool"]["joined"] for m in got.values()}) > 1  # rows were refilled
    assert len(group_ids(tmp_path / "slurm")) == 1


@pytest.fixture(scope="module")
def uninterrupted_group(tmp_path_factory) -> Path:
    """LONG_GROUP through the local fused launcher: what a preempted group's members must end equal to."""
    sweep_dir = tmp_path_factory.mktemp("uninterrupted_group")
    result = run_cli("-m", *LONG_GROUP, "hydra/launcher=fused", f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    return sweep_dir


@pytest.mark.parametrize("how", ["usr2", "requeue"])
def test_a_preempted_group_is_requeued_and_each_member_resumes_bitwise(
    slurm, uninterrupted_group, tmp_path, how
):
    sweep_dir = tmp_path / "sweep"
    sweep = Sweep(["-m", *LONG_GROUP, *ON_FUSED_SLURM, f"hydra.sweep.dir={sweep_dir}"], tmp_path / "log")
    try:
        members = sweep.until(lambda: _checkpointed(sweep_dir, "*", 2), "both members' checkpoints")
        job_id = slurm_job_id(members[0])
        if how == "usr2":
            slurm.run("scancel", "--signal=USR2", job_id)
        else:
            slurm.run("scontrol", "requeue", job_id)
        returncode = sweep.wait()
    finally:
        sweep.stop()
    assert returncode == 0, sweep.output()
    assert group_ids(sweep_dir).keys() == {job_id}  # one job trained both, requeued, not resubmitted
    name = "SIGUSR2" if how == "usr2" else "SIGTERM"
    for member in members:
        metrics = json.loads((member / "metrics.json").read_text())
        expected = uninterrupted_group / member.name
        assert results(metrics) == results(json.loads((expected / "metrics.json").read_text())), member.name
        first, second = metrics["attempts"]
        assert first["to_step"] == second["from_step"] < 3000
        assert (
            f"interrupted by {name} at step {first['to_step']}: checkpoint written"
            in (member / "run.log").read_text()
        )
        want, got = flat_params(expected, 3000), flat_params(member, 3000)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{member.name} {key}")
    if how == "usr2":  # submitit's handler, called after every member's checkpoint, requeued it
        assert (
            f"Requeued job {job_id}" in (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
        )


def test_two_fused_slurm_sweeps_on_one_folder_train_each_member_once(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    long_enough = [a for a in LONG_GROUP if not a.startswith("max_steps=")] + ["max_steps=6000"]
    args = ["-m", *long_enough, "histograms=false", *ON_FUSED_SLURM, f"hydra.sweep.dir={sweep_dir}"]
    # Started together, their two jobs run side by side (a CPU each) and meet at the members' locks.
    sweeps = [Sweep(args, tmp_path / name) for name in ("first", "second")]
    try:
        for sweep in sweeps:
            assert sweep.wait() == 0, sweep.output()
    finally:
        for sweep in sweeps:
            sweep.stop()
    members = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert len(members) == 2
    logs = [(member / "run.log").read_text() for member in members]
    for member, log in zip(members, logs, strict=True):
        metrics = json.loads((member / "metrics.json").read_text())
        assert metrics["status"] == "ok" and len(metrics["attempts"]) == 1, member.name
        assert log.count("step 0  loss") == 1, member.name  # trained by one job only
    assert any("is training this job: skipped here" in log for log in logs)  # they met, one passed


def test_a_cancelled_group_ends_the_sweep_with_its_members_recorded_and_a_summary(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    lost_after_s = 5
    args = [
        "-m",
        *FAST,
        "hidden=16",
        "max_steps=200,3000",  # two schedules: two groups of two
        "lr=0.001,0.002",
        *ON_FUSED_SLURM,
        f"hydra.launcher.lost_after_s={lost_after_s}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = Sweep(args, tmp_path / "log")
    try:
        long = sweep.until(lambda: _checkpointed(sweep_dir, "*max_steps=3000*", 2), "the long group")
        job_id = slurm_job_id(long[0])
        slurm.run("scancel", job_id)
        cancelled = time.monotonic()
        returncode = sweep.wait()
        ended_s = time.monotonic() - cancelled
        print(f"a cancelled group: the sweep ended {ended_s:.1f} s later")
    finally:
        sweep.stop()
    output = sweep.output()
    assert returncode == 1, output
    last = sweep.err.read_text().strip().splitlines()[-1]
    names = ", ".join(m.name for m in long)
    assert last.startswith(
        f"error: 1 SLURM job(s) ended without a result (cancelled, failed or lost): {job_id} ({names}); "
    ), output
    lost = f"SLURM job {job_id} ended without a result (not in squeue, no state from sacct): it was"
    assert f"{lost} cancelled or lost (its 2 configs: {names})" in output
    assert ended_s < lost_after_s + 10 + 20, ended_s
    statuses = {name: m["status"] for name, m in job_metrics(sweep_dir).items()}
    assert statuses == {
        **{m.name: "interrupted" for m in long},
        **{n: "ok" for n in statuses if "max_steps=200" in n},
    }
    assert len(statuses) == 4
    rows = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(rows) == 5 and sum(",interrupted," in r for r in rows) == 2, rows

    rerun = run_cli(*args, timeout=WAIT_S)  # the same command resumes the cancelled group
    assert rerun.returncode == 0, rerun.stderr
    assert "Launching 4 jobs as 1 SLURM job(s): 2 in fused groups, 0 alone, 2 finished before" in rerun.stdout
    for member in long:
        metrics = json.loads((member / "metrics.json").read_text())
        assert metrics["status"] == "ok" and len(metrics["attempts"]) == 2


def test_an_optuna_study_with_pruning_trains_each_batch_as_one_fused_slurm_job(slurm, tmp_path):
    import optuna

    from sweeper.trial import storage

    pruner = [  # stops every trial at its first report after step 100: the plumbing, deterministically
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.01",
        "hydra.sweeper.pruner.n_warmup_steps=100",
    ]
    args = ["-m", "sweep=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    args += [a for a in SWEEP if not a.startswith(("hidden=", "max_steps="))] + ["max_steps=300"]
    result = run_cli(
        *args, *pruner, *ON_FUSED_SLURM, "hydra.launcher.widths=pad", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="sweeper", storage=storage(str(tmp_path / "optuna.journal")))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 4
    assert all(sorted(t.intermediate_values) == [50, 100] for t in study.trials)
    metrics = job_metrics(tmp_path)
    assert len(metrics) == 4 and {m["status"] for m in metrics.values()} == {"pruned"}
    assert {m["steps"] for m in metrics.values()} == {100}
    groups = group_ids(tmp_path)  # a batch of 2 trials per SLURM job, fused
    assert sorted(len(names) for names in groups.values()) == [2, 2], groups
    for name in metrics:
        assert "fused with 2 jobs in one program" in (tmp_path / name / "run.log").read_text()


# -- without SLURM -------------------------------------------------------------------------------------


def test_the_plugin_imports_nothing_heavy_and_is_silently_absent_without_submitit():
    check = """
import importlib.abc, sys, warnings
warnings.simplefilter("error")
if sys.argv[1] == "blocked":
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "submitit" or name.startswith("hydra_plugins.hydra_submitit_launcher"):
                raise ImportError(f"No module named {name!r}")
    sys.meta_path.insert(0, Block())
from hydra.core.config_store import ConfigStore
from hydra_plugins.sweeper_slurm import config, fused_slurm_launcher, slurm_launcher
assert "submitit" not in sys.modules and "jax" not in sys.modules and "sweeper" not in sys.modules
launchers = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
print(hasattr(config, "SweeperSlurmConf"), hasattr(slurm_launcher, "SweeperSlurmLauncher"),
      "sweeper_slurm.yaml" in launchers, hasattr(config, "SweeperFusedSlurmConf"),
      hasattr(fused_slurm_launcher, "SweeperFusedSlurmLauncher"), "sweeper_fused_slurm.yaml" in launchers)
"""
    for mode, expected in (("installed", " ".join(["True"] * 6)), ("blocked", " ".join(["False"] * 6))):
        result = subprocess.run(
            [sys.executable, "-c", check, mode], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.strip() == expected, mode
    scan = run_cli("--help")  # Hydra's plugin scan imports every plugin module: no warnings
    assert scan.returncode == 0 and "Error importing" not in scan.stderr and "scanner" not in scan.stderr


def test_it_submits_what_hydras_own_launcher_submits_then_waits_itself(tmp_path):
    overrides = [
        "hydra.launcher.partition=debug",
        "+hydra.launcher.additional_parameters.mail-type=END",
        "hydra.launcher.setup=['export A=1']",
        "hydra.launcher.lost_after_s=0",
        "hydra.launcher.poll_s=0.01",
    ]
    ours = launch("sweeper", tmp_path / "sweep", fake_slurm(tmp_path / "ours"), *overrides)
    # Upstream's own launcher is refused at sbatch: its wait would hang on jobs that never run.
    upstreams = launch("upstream", tmp_path / "sweep", fake_slurm(tmp_path / "upstream", False), *overrides)
    assert upstreams["error"] == "FailedJobError: sbatch: refused", upstreams
    (script,), (expected,) = submitted(tmp_path / "ours"), submitted(tmp_path / "upstream")
    assert script == expected  # one array, the same sbatch parameters, setup and command
    for flag in ("array=0-1%", "partition=debug", "mail-type=END", "cpus-per-task=4", "signal=USR2@"):
        assert f"#SBATCH --{flag}" in script, flag
    assert "export A=1" in script
    # Then sweeper's wait: squeue lists neither job and neither wrote a result, so both are lost.
    returns = ours["returns"]
    assert [(r["type"], r["status"], r["overrides"]) for r in returns] == [
        ("UnfinishedJob", "FAILED", ["hidden=16"]),
        ("UnfinishedJob", "FAILED", ["hidden=32"]),
    ]
    for r, job_id in zip(returns, ("42_0", "42_1"), strict=True):
        assert r["error"].startswith(f"SLURM job {job_id} ended without a result"), r["error"]


def test_the_fused_launcher_submits_hydras_sbatch_script_with_a_group_per_task(tmp_path):
    overrides = [
        "hydra.launcher.partition=debug",
        "hydra.launcher.lost_after_s=0",
        "hydra.launcher.poll_s=0.01",
    ]
    ours = launch("fused", tmp_path / "sweep", fake_slurm(tmp_path / "ours"), *overrides)
    launch("upstream", tmp_path / "sweep", fake_slurm(tmp_path / "upstream", False), *overrides)
    (script,), (expected,) = submitted(tmp_path / "ours"), submitted(tmp_path / "upstream")
    # Two widths on a CPU node: two groups, so the same array of two tasks and sbatch parameters.
    assert script == expected
    returns = ours["returns"]
    assert [(r["type"], r["overrides"]) for r in returns] == [
        ("UnfinishedJob", ["hidden=16"]),
        ("UnfinishedJob", ["hidden=32"]),
    ]
    for r, job_id in zip(returns, ("42_0", "42_1"), strict=True):
        assert r["error"].startswith(f"SLURM job {job_id} ended without a result"), r["error"]
    one_group = launch(
        "fused", tmp_path / "one", fake_slurm(tmp_path / "one"), *overrides, "hydra.launcher.widths=pad"
    )
    (script,) = submitted(tmp_path / "one")
    assert "#SBATCH --array" not in script  # both widths padded into one program: a single job
    lost = "SLURM job 42 ended without a result"
    assert [r["error"].split(" (")[0] for r in one_group["returns"]] == [lost, lost]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["hidden=16,32", "hydra.launcher.pbt.interval=50"],  # two widths on CPU: two groups
            "error: hydra.launcher.pbt copies members within one program: its 2 configs need "
            "hydra.launcher.max_batch >= 2 (and one width or hydra.launcher.widths=pad), got 2 groups",
        ),
        (
            ["lr=0.001,0.002", "hydra.launcher.gpus_per_node=2", "hydra.launcher.devices=4"],
            "error: hydra.launcher.devices must be at most the 2 GPU(s) each SLURM job gets "
            "(hydra.launcher.gpus_per_node), got 4",
        ),
        (["lr=0.001,0.002", "hydra.launcher.widths=wide"], "error: hydra.launcher.widths must be auto,"),
        (
            ["lr=0.001,0.002,0.003", "hydra.launcher.pbt.interval=50", "hydra.launcher.max_batch=2"]
            + ["hydra.launcher.per_job=3"],
            "error: hydra.launcher.pbt copies members within one program, which a slot pool is not: "
            "its 3 configs need hydra.launcher.max_batch >= 3 (and per_job, on SLURM, at most max_batch)",
        ),
        (
            ["lr=0.001,0.002", "hydra.launcher.halving=true", "data.val_size=0"],
            "error: objective.metric=val_accuracy ranks a sweep on the validation split, which "
            "data.val_size=0 leaves empty: set data.val_size > 0 (or a train_ objective)",
        ),
    ],
    ids=["pbt_across_groups", "devices", "hidden", "pbt_in_a_pool", "halving_without_val"],
)
def test_bad_fused_slurm_settings_are_one_line_errors_before_anything_is_submitted(tmp_path, overrides, says):
    env = fake_slurm(tmp_path)  # an sbatch that would accept: nothing must reach it
    args = ["-m", *FAST, "hydra/launcher=fused_slurm", *overrides, f"hydra.sweep.dir={tmp_path / 's'}"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(says), line
    assert submitted(tmp_path) == [] and not (tmp_path / "s" / ".submitit").exists()
    assert not [p for p in (tmp_path / "s").glob("*") if p.is_dir()]  # no job folder


class UncompletedJobError(Exception):
    """Stands in for submitit's (importing submitit here would reconfigure logging under pytest)."""


class FakeJob:
    """The parts of a submitit job that the launcher's wait uses."""

    def __init__(self, folder: Path, job_id: str, outcome=None):
        self.job_id, self.outcome = job_id, outcome
        self.paths = SimpleNamespace(
            folder=folder, result_pickle=folder / f"{job_id}_result.pkl", stderr=folder / f"{job_id}.err"
        )

    def finish(self) -> None:
        self.paths.result_pickle.write_text("done")

    def results(self):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return [self.outcome]


def test_the_wait_returns_results_and_turns_lost_or_raising_jobs_into_failed_ones(
    tmp_path, monkeypatch, capsys
):
    from hydra_plugins.sweeper_slurm import _core

    done = JobReturn(overrides=["hidden=0"], status=JobStatus.COMPLETED, _return_value=0.5)
    timed_out = UncompletedJobError("Job not requeued because: timed-out too many times.")
    failed = JobReturn(
        overrides=["hidden=4"],
        hydra_cfg=OmegaConf.create({"hydra": {"runtime": {"output_dir": "/x/hidden=4"}}}),
        working_dir="/x",
        status=JobStatus.FAILED,
        _return_value=timed_out,
    )
    jobs = [
        FakeJob(tmp_path, "7_0", done),  # finished
        FakeJob(tmp_path, "7_1"),  # cancelled: leaves squeue, never writes a result
        FakeJob(tmp_path, "7_2", UncompletedJobError("job 7_2 has not produced any output\nmore")),
        FakeJob(tmp_path, "7_3", done),  # requeued: listed a while without a result, then finishes
        FakeJob(tmp_path, "7_4", failed),  # its task raised (submitit's USR2 handler, out of requeues)
    ]
    polls = {"n": 0}

    def queued(_jobs):
        polls["n"] += 1
        if polls["n"] == 3:
            for i in (0, 2, 4):
                jobs[i].finish()
        if polls["n"] == 8:
            jobs[3].finish()
        return {"7_3"} | ({"7_0", "7_1", "7_2", "7_4"} if polls["n"] < 2 else set())

    monkeypatch.setattr(_core, "_queued", queued)
    monkeypatch.setattr(_core, "_sacct_state", lambda job_id: None)
    callbacks = SimpleNamespace(callbacks=[])
    launcher = SimpleNamespace(
        poll_s=0.01,
        lost_after_s=0.03,
        config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "job": {"name": "run"}}}),
        hydra_context=SimpleNamespace(callbacks=callbacks, config_loader=None),
    )
    overrides = [[f"hidden={i}"] for i in range(5)]
    returns = _core.wait(launcher, jobs, overrides)
    assert returns[0] is done and returns[3] is done
    for i in (1, 2, 4):
        assert returns[i].status == JobStatus.FAILED and returns[i].overrides == overrides[i]
        assert returns[i].return_value is None  # Hydra's basic sweeper reads it: no raise, the sweep goes on
    assert returns[4].error is timed_out and returns[4].working_dir == "/x"
    lost = str(returns[1].error)
    assert "SLURM job 7_1 ended without a result (not in squeue, no state from sacct)" in lost
    assert f"hydra.sweep.dir={tmp_path} resumes it" in lost
    assert str(returns[2].error).startswith("SLURM job 7_2 failed: UncompletedJobError: job 7_2 has not")

    (report,) = callbacks.callbacks  # added once, for the multirun's end
    with pytest.raises(SystemExit) as stopped:
        report.on_multirun_end(config=launcher.config)
    assert stopped.value.code == 1
    line = capsys.readouterr().err.strip()
    assert line == (
        "error: 3 SLURM job(s) ended without a result (cancelled, failed or lost): "
        "7_1 (hidden=1); 7_2 (hidden=2); 7_4 (hidden=4); "
        f"run the same command with hydra.sweep.dir={tmp_path} to resume them"
    )

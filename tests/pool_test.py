"""Slot pools: a fused program of K slots that the waiting configs keep full (sweeper.train.fused, engine).

Members that end (finished, diverged) free their rows at a segment boundary; the next configs take
them there, each from its own step 0, while the others go on. Every config must end where it ends alone.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import FAST, job_metrics, kill_when, killed_and_rerun, results, run_cli
from fused_test import assert_same_run, cfg_of

from sweeper import train
from sweeper.train import fused
from sweeper.train.controllers import AsyncHalving

# Four slots, twelve configs of one width. lr=100 diverges at its step 50, so rows free at staggered
# steps and configs join at program steps 50, 100, 200, 250 and 300 (L, which ends at 500).
POOL = {
    "A": ("lr=0.001",),
    "B": ("lr=100",),
    "C": ("lr=0.002",),
    "D": ("lr=100", "reg=1.0"),
    "E": ("lr=0.001", "reg=1.0"),
    "F": ("lr=100", "seed=1"),
    "G": ("lr=0.002", "seed=1"),
    "H": ("lr=100", "reg=1.0", "seed=1"),
    "I": ("lr=0.001", "seed=1"),
    "J": ("lr=0.003",),
    "K": ("lr=100", "reg=0.5"),
    "L": ("lr=0.002", "reg=1.0"),
}
JOINED = {"A": 0, "B": 0, "C": 0, "D": 0, "E": 50, "F": 50, "G": 100, "H": 200, "I": 200, "J": 250}
JOINED |= {"K": 250, "L": 300}


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    out = {}
    for name, overrides in POOL.items():
        workdir = tmp_path_factory.mktemp(f"alone-{name}")
        out[name] = (train.train_and_evaluate(cfg_of("hidden=16", *overrides), workdir), workdir)
    return out


@pytest.mark.slow
def test_configs_through_a_slot_pool_end_as_they_end_alone_whenever_they_joined(tmp_path, alone, caplog):
    cfgs = [cfg_of("hidden=16", *overrides) for overrides in POOL.values()]
    workdirs = [tmp_path / name for name in POOL]
    ended = []
    with caplog.at_level("INFO", logger="sweeper.train"):
        got = fused.train_group(
            cfgs,
            workdirs,
            max_batch=4,
            log_files=[w / "run.log" for w in workdirs],
            on_end=lambda i, m: ended.append(list(POOL)[i]),
        )
    for name, metrics, workdir in zip(POOL, got, workdirs, strict=True):
        expected, expected_dir = alone[name]
        if expected["status"] == "diverged":
            assert results(metrics) | {"wall_time_s": 0} == results(expected) | {"wall_time_s": 0}, name
        else:
            assert_same_run(metrics, expected, workdir, expected_dir, 200)
        pool = metrics["timings"]["pool"]
        assert (pool["joined"], pool["slots"], pool["id"]) == (JOINED[name], 4, 0), name
        assert pool["left"] == JOINED[name] + metrics["steps"], name
        log = (workdir / "run.log").read_text()
        assert f"in slot pool 0 (4 slots) from program step {JOINED[name]}" in log, name
    assert sorted(ended) == sorted(POOL)  # each once, as it finished
    left = {name: m["timings"]["pool"]["left"] for name, m in zip(POOL, got, strict=True)}
    assert [left[name] for name in ended] == sorted(left.values())
    member_steps = sum(m["steps"] for m in got)
    assert member_steps == 7 * 200 + 5 * 50
    done = next(r.message for r in caplog.records if r.message.startswith("slot pool 0 done"))
    occupancy = member_steps / (4 * 500)
    assert f"12 jobs, 500 program steps, 1 program (width 16), slot occupancy {occupancy:.2f}" in done
    assert "compute occupancy 1.00" in done  # one width: nothing padded


@pytest.mark.slow
def test_a_pooled_grid_leaves_every_runs_record_and_reports_its_occupancy(tmp_path):
    args = ["-m", *FAST, "hidden=16", "lr=0.001,0.002,100", "reg=0.1,1.0", "hydra/launcher=fused"]
    args += ["hydra.launcher.max_batch=2", f"hydra.sweep.dir={tmp_path}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "slot pool 0: 6 jobs through 2 slots, a program per width" in result.stdout  # group on a CPU
    assert "slot occupancy" in result.stdout and "compute occupancy 1.00" in result.stdout
    metrics = job_metrics(tmp_path)
    assert len(metrics) == 6
    assert sorted(m["status"] for m in metrics.values()) == ["diverged"] * 2 + ["ok"] * 4
    for name in metrics:
        assert (tmp_path / name / ".hydra" / "config.yaml").is_file()
        assert len(list((tmp_path / name).glob("events.out.tfevents.*"))) >= 3, name
    summary = (tmp_path / "summary.md").read_text()
    assert "slot occupancy" in summary and "compute occupancy 1.00" in summary
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 7


@pytest.mark.slow
def test_a_killed_pool_resumes_with_every_config_done_once(tmp_path):
    args = ["-m", *FAST, "hidden=16", "max_steps=600", "lr=0.001,0.002,0.003", "reg=0.1,1.0"]
    args += ["histograms=false", "hydra/launcher=fused", "hydra.launcher.max_batch=2"]
    whole, killed, finished, _ = killed_and_rerun(args, tmp_path, "*/checkpoints/step_300.pkl", 2)
    expected, got = job_metrics(whole), job_metrics(killed)
    assert got.keys() == expected.keys() and len(got) == 6
    resumed = {name for name, m in got.items() if len(m["attempts"]) == 2}
    assert len(resumed) >= 2 and not resumed & finished  # the two killed at step 300 at least
    for name in expected:
        assert results(got[name]) == results(expected[name]), name  # bitwise, whenever they joined
        assert json.loads((killed / name / "metrics.json").read_text())["status"] == "ok"
        log = (killed / name / "run.log").read_text()
        assert log.count("step 0  loss") == 1, name  # none trained twice from the start
        assert ("resumed from" in log) == (name in resumed), name


def test_asynchronous_halving_promotes_by_the_rule_as_members_reach_the_rung(tmp_path):
    grid = [(f"lr={lr}", f"reg={reg}") for lr in (0.0005, 0.001, 0.002, 0.004) for reg in (0.1, 1.0)]
    cfgs = [cfg_of("hidden=16", *overrides) for overrides in grid]
    workdirs = [tmp_path / f"job{i}" for i in range(len(grid))]
    rung_file = tmp_path / "rungs.jsonl"
    halving = AsyncHalving((100,), 0.5, rung_file)
    got = fused.train_group(cfgs, workdirs, max_batch=2, halving=halving)
    arrivals = [json.loads(line) for line in rung_file.read_text().splitlines()]
    assert sorted(a["job"] for a in arrivals) == sorted(w.name for w in workdirs)  # each once
    by_job = dict(zip((w.name for w in workdirs), got, strict=True))
    # Replay the rule: members reaching the rung at one program step are counted together.
    seen: dict[str, float] = {}
    batches: dict[int, list[str]] = {}
    for job, metrics in by_job.items():
        batches.setdefault(metrics["timings"]["pool"]["joined"] + 100, []).append(job)
    assert len(batches) > 2  # they reached it at several steps: no rung waited to fill
    values = {a["job"]: a["value"] for a in arrivals}  # the objective: val accuracy
    for step in sorted(batches):
        seen |= {job: values[job] for job in batches[step]}
        keep = math.ceil(0.5 * len(seen))
        for job in batches[step]:
            promoted = sum(v > values[job] for v in seen.values()) < keep
            metrics = by_job[job]
            assert (metrics["status"], metrics["steps"]) == (("ok", 200) if promoted else ("pruned", 100)), (
                job
            )
            if not promoted:  # its metrics are from the rung it stopped at
                assert metrics["val_accuracy"] == values[job], job
    assert {m["status"] for m in got} == {"ok", "pruned"}


OPTUNA = ["-m", "sweep=optuna", *(a for a in FAST if not a.startswith("hidden=")), "histograms=false"]
MEDIAN = [  # prunes below the median of earlier trials from step 100 on: trials end at different steps
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=50",
]


def _study(sweep_dir):
    import optuna

    from sweeper.trial import storage

    return optuna.load_study(study_name="sweeper", storage=storage(str(sweep_dir / "optuna.journal")))


@pytest.mark.slow
def test_optuna_with_pruning_through_a_pool_asks_as_slots_free_and_finishes_exactly_n_trials(tmp_path):
    from optuna.trial import TrialState

    args = [*OPTUNA, *MEDIAN, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=3", "hydra/launcher=fused"]
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert "slot pool 0: trials through 3 slots" in result.stdout
    trials = _study(tmp_path).trials
    assert len(trials) == 8 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    metrics = job_metrics(tmp_path)
    assert len(metrics) == 8
    joined = sorted(m["timings"]["pool"]["joined"] for m in metrics.values())
    assert joined[:3] == [0, 0, 0] and joined[3] > 0  # later trials were asked as slots freed
    values = sorted(m["objective"] for m in metrics.values() if m["status"] == "ok")
    assert sorted(t.value for t in trials if t.state == TrialState.COMPLETE) == values  # each told its own
    for m in metrics.values():
        assert m["status"] in ("ok", "pruned") and (m["status"] == "pruned") == (m["steps"] < 200)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    assert pruned == sum(m["status"] == "pruned" for m in metrics.values())


@pytest.mark.slow
def test_a_killed_optuna_pool_resumes_its_running_trials_and_tells_them(tmp_path):
    from optuna.trial import TrialState

    args = [
        *OPTUNA,
        "max_steps=600",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=fused",
    ]
    sweep_dir = tmp_path / "sweep"
    kill_when(
        [*args, f"hydra.sweep.dir={sweep_dir}"],
        lambda: len(list(sweep_dir.glob("*/checkpoints/step_300.pkl"))) >= 2,
    )
    running = {t.number for t in _study(sweep_dir).trials if t.state == TrialState.RUNNING}
    assert len(running) == 2
    rerun = run_cli(*args, f"hydra.sweep.dir={sweep_dir}")
    assert rerun.returncode == 0, rerun.stderr
    for number in running:
        assert (
            f"trial {number} was cut off by an interruption: its job runs again, and resumes" in rerun.stdout
        )
    trials = _study(sweep_dir).trials
    assert len(trials) == 5 and {t.state for t in trials} == {TrialState.COMPLETE}  # retold, none failed
    metrics = job_metrics(sweep_dir)
    assert len(metrics) == 5
    resumed = [m for m in metrics.values() if len(m["attempts"]) == 2]
    assert len(resumed) == 2 and all(m["attempts"][1]["from_step"] == 300 for m in resumed)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["hydra.launcher.halving=async", "data.val_size=0"],
            "error: objective.metric=val_accuracy ranks a sweep on the validation split, which "
            "data.val_size=0 leaves empty: set data.val_size > 0 (or a train_ objective)",
        ),
        (
            ["hydra.launcher.halving=async", "hydra.launcher.rungs=[100,200]"],
            "error: hydra.launcher.rungs must be steps in (0, max_steps=200), got [100, 200]",
        ),
        (["hydra.launcher.max_batch=0"], "error: hydra.launcher.max_batch must be >= 1, got 0"),
        (["hydra.launcher.halving=sometimes"], "error: hydra.launcher.halving must be true, false or async"),
    ],
    ids=["async_without_val", "rung_at_max_steps", "max_batch", "halving_kind"],
)
@pytest.mark.parametrize("search", ["grid", "optuna"])
def test_bad_pool_settings_are_one_line_errors_before_any_work(tmp_path, overrides, says, search):
    grid = (
        ["hidden=16", "lr=0.001,0.002,0.003"]
        if search == "grid"
        else [*OPTUNA[1:], "hydra.sweeper.n_trials=3"]
    )
    args = ["-m", *FAST, *grid, "hydra/launcher=fused", "hydra.launcher.max_batch=2", *overrides]
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(says), line
    assert not list(tmp_path.glob("*/metrics.json")) and not list(tmp_path.glob("*/checkpoints"))
    if search == "optuna" and (tmp_path / "optuna.journal").exists():
        assert _study(tmp_path).trials == []  # no trial asked


def test_a_pool_that_emptied_takes_a_wider_trial(tmp_path):
    # One slot: the first trial ends, the pool is empty, and the next trial (wider) widens it.
    queue = [(cfg_of("hidden=16"), tmp_path / "narrow", None), (cfg_of("hidden=32"), tmp_path / "wide", None)]
    got = fused.train_stream(lambda free: [queue.pop(0)] if queue else [], slots=1)
    alone = train.train_and_evaluate(cfg_of("hidden=32"), tmp_path / "alone")
    assert [m["status"] for m in got] == ["ok", "ok"]
    assert_same_run(got[1], alone, tmp_path / "wide", tmp_path / "alone", 200)


# A study's trials in the order asked, two rows: 16 and 64 start, 64 diverges at its step 50 (a padded
# program narrows to 16, then widens to 32 as 32 joins), 16 joins at step 200 and goes on alone at 16
# once 32 ends at program step 250.
MIXED = {"n16": ("hidden=16", "lr=0.002"), "w64": ("hidden=64", "lr=100"), "m32": ("hidden=32", "reg=1.0")}
MIXED |= {"n16b": ("hidden=16", "lr=0.001")}


@pytest.mark.parametrize("pad", [False, True], ids=["a program per width", "one padded program"])
def test_a_mixed_width_pool_gives_each_trial_its_alone_run_and_counts_the_padding(tmp_path, pad, caplog):
    queue = [(cfg_of(*o), tmp_path / name, None) for name, o in MIXED.items()]
    with caplog.at_level("INFO", logger="sweeper.train"):
        got = fused.train_stream(
            lambda free: [queue.pop(0) for _ in range(min(free, len(queue)))], slots=2, pad_widths=pad
        )
    for (name, overrides), metrics in zip(MIXED.items(), got, strict=True):
        alone = train.train_and_evaluate(cfg_of(*overrides), tmp_path / f"alone-{name}")
        if alone["status"] == "diverged":
            assert results(metrics) | {"wall_time_s": 0} == results(alone) | {"wall_time_s": 0}, name
        else:
            assert_same_run(metrics, alone, tmp_path / name, tmp_path / f"alone-{name}", 100)
    pools = {name: m["timings"]["pool"] for name, m in zip(MIXED, got, strict=True)}
    occupancy = {name: p["gflop"] / p["gflop_computed"] for name, p in pools.items()}
    done = next(r.message for r in caplog.records if r.message.startswith("slot pool 0 done"))
    if pad:  # 16 padded to 64 while they share the program: its rows computed more than it needed
        assert occupancy["w64"] == 1.0 and occupancy["m32"] == 1.0
        # n16b: 50 steps beside m32 (padded to 32, half of it needed), then 150 alone at 16
        assert occupancy["n16b"] == pytest.approx(200 / (50 * 2 + 150), abs=0.01)
        assert occupancy["n16"] < 1.0  # padded to 64 for its first 50 steps
        assert "1 program (width 16)" in done and "compute occupancy 1.00" not in done
    else:  # each width its own program: nothing padded
        assert set(occupancy.values()) == {1.0}
        assert "programs (width 16, width 32, width 64)" in done and "compute occupancy 1.00" in done


@pytest.mark.slow
def test_a_study_left_to_the_fused_launcher_on_a_cpu_runs_the_basic_launchers_study(tmp_path):
    # sweep=optuna leaves n_jobs to the launcher: on a CPU the fused launcher takes one trial at a time,
    # so the sampler sees what it sees one trial at a time, and each trial trains as it does alone.
    args = [*OPTUNA, *MEDIAN, "hydra.sweeper.n_trials=4"]
    fused_run = run_cli(*args, "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path / 'fused'}")
    assert fused_run.returncode == 0, fused_run.stderr
    assert "slot pool of 1 rows on cpu: a program per width" in fused_run.stdout
    basic_run = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'basic'}")
    assert basic_run.returncode == 0, basic_run.stderr
    fused_trials, basic_trials = _study(tmp_path / "fused").trials, _study(tmp_path / "basic").trials
    assert [t.params for t in fused_trials] == [t.params for t in basic_trials]
    assert [t.state for t in fused_trials] == [t.state for t in basic_trials]
    for f, b in zip(fused_trials, basic_trials, strict=True):
        assert f.intermediate_values.keys() == b.intermediate_values.keys()
        assert list(f.intermediate_values.values()) == pytest.approx(
            list(b.intermediate_values.values()), abs=1e-5
        )

"""Fused sweeps (`hydra/launcher=fused`): equivalence with single runs, isolation, halving, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST, compose_config, job_metrics, killed_and_rerun, mlp_spec, results, run_cli
from omegaconf import OmegaConf

from hydra_plugins.sweeper_fused.fused_launcher import FusedLauncher
from sweeper import config, summary, train
from sweeper.config import ConfigError
from sweeper.record import checkpoint
from sweeper.task import data, models, train_step
from sweeper.train import fused, program
from sweeper.train.controllers import Halving, default_rungs
from sweeper.train.plan import chunks, fuse_key, plan

# Fused vs alone: XLA may sum the vmapped products in another order, so the runs can differ in the
# last bits. Measured here: identical accuracies, losses within 2e-7 relative, parameters within 1e-6.
ACCURACY_TOL = 0.01
LOSS_RTOL = 1e-4
PARAM_ATOL = 1e-4


def cfg_of(*overrides: str):
    return compose_config(*FAST, *overrides)


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def params_of(folder: Path, step: int) -> dict:
    return checkpoint.load(folder / "checkpoints" / f"step_{step}.pkl")["params"]


def assert_same_run(got: dict, expected: dict, got_dir: Path, expected_dir: Path, step: int) -> None:
    assert got["status"] == expected["status"] and got["steps"] == expected["steps"]
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert got[key] == pytest.approx(expected[key], abs=ACCURACY_TOL), key
    assert got["loss"] == pytest.approx(expected["loss"], rel=LOSS_RTOL)
    for a, b in zip(
        jax.tree.leaves(params_of(got_dir, step)), jax.tree.leaves(params_of(expected_dir, step)), strict=True
    ):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=PARAM_ATOL)


GRID = [  # mixed widths, learning rates, regs and seeds (so both shared and per-member batches)
    ("hidden=16", "lr=0.001", "reg=0.1", "seed=0"),
    ("hidden=32", "lr=0.002", "reg=0.1", "seed=0"),
    ("hidden=24", "lr=0.001", "reg=1.0", "seed=1"),
]


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each GRID config trained alone, as the basic launcher would."""
    out = {}
    for overrides in GRID:
        workdir = tmp_path_factory.mktemp("alone")
        out[overrides] = (train.train_and_evaluate(cfg_of(*overrides), workdir), workdir)
    return out


@pytest.mark.parametrize("seeds", ["shared", "mixed"])
def test_a_padded_group_ends_where_each_config_ends_alone(tmp_path, alone, seeds):
    grid = GRID if seeds == "mixed" else GRID[:2]
    workdirs = [tmp_path / str(i) for i in range(len(grid))]
    got = fused.train_group([cfg_of(*o) for o in grid], workdirs)
    for metrics, workdir, overrides in zip(got, workdirs, grid, strict=True):
        expected, expected_dir = alone[overrides]
        assert_same_run(metrics, expected, workdir, expected_dir, 200)
        assert metrics == metrics_of(workdir)
        assert metrics["timings"]["fused_jobs"] == len(grid)


def test_padded_units_stay_exactly_zero():
    width = 16
    abstract = models.abstract(mlp_spec(width))
    opt = cfg_of().optimizer
    make_optimizer = train_step.optimizer_factory(opt)
    padding = abstract.padding
    params = [padding.resize(train_step.init_run(mlp_spec(h), 0)[0], {"hidden": width}) for h in (8, 16)]
    opt_states = [train_step.init_optimizer(opt, p) for p in params]
    state = train_step.TrainState(
        program._stack(params), program._stack(opt_states), jnp.ones(2, bool), np.int32(0)
    )
    mask = {"hidden": np.stack([np.arange(width) < h for h in (8, 16)]).astype(np.float32)}
    hyper = train_step.Hyper(jnp.asarray([0.01, 0.01]), jnp.asarray([0.1, 0.1]), {}, mask)
    images = np.random.default_rng(0).integers(0, 256, (64, 3072), dtype=np.uint8)
    data = train_step.DeviceData(jnp.asarray(images), jnp.asarray(np.arange(64) % 10), jnp.zeros(3072))
    batches = np.arange(5 * 32).reshape(5, 32) % 64
    segment = train_step.make_segment(abstract.graphdef, padding, make_optimizer, stacked=True)
    state, (losses, _) = segment(state, hyper, data, batches)
    narrow = jax.tree.map(lambda x: np.asarray(x[0]), state.params)
    assert np.isfinite(np.asarray(losses)).all()
    assert (narrow["layer1"]["kernel"][...][8:] == 0).all() and (narrow["layer1"]["bias"][...][8:] == 0).all()
    assert (narrow["layer2"]["kernel"][...][:, 8:] == 0).all()
    assert (narrow["layer1"]["kernel"][...][:8] != params[0]["layer1"]["kernel"][...][:8]).any()  # it trained


def test_a_diverging_member_is_frozen_and_the_rest_are_unaffected(tmp_path, alone):
    grid = [GRID[0], ("hidden=16", "lr=100", "reg=0.1", "seed=0"), GRID[1]]
    workdirs = [tmp_path / str(i) for i in range(3)]
    got = fused.train_group([cfg_of(*o) for o in grid], workdirs)
    assert got[1]["status"] == "diverged" and got[1]["objective"] == 0.0
    assert got[1]["test_accuracy"] is None and got[1]["steps"] < 200
    assert not (workdirs[1] / "checkpoints").exists() or not list((workdirs[1] / "checkpoints").glob("*.pkl"))
    for i in (0, 2):
        assert_same_run(got[i], alone[grid[i]][0], workdirs[i], alone[grid[i]][1], 200)
    alone_diverged = train.train_and_evaluate(cfg_of(*grid[1]), tmp_path / "alone")
    assert results(alone_diverged) | {"wall_time_s": 0} == results(got[1]) | {"wall_time_s": 0}


def test_successive_halving_keeps_the_best_and_prunes_the_rest(tmp_path):
    lrs = ("0.0001", "0.0003", "0.001", "0.003")
    workdirs = [tmp_path / f"lr={lr}" for lr in lrs]
    halving = Halving(rungs=(50, 100), keep=0.5)
    got = fused.train_group([cfg_of(f"lr={lr}") for lr in lrs], workdirs, halving=halving)
    statuses = [m["status"] for m in got]
    assert sorted(statuses) == ["ok", "pruned", "pruned", "pruned"]
    assert sorted(m["steps"] for m in got) == [50, 50, 100, 200]
    first_cut = [m for m in got if m["steps"] == 50]
    survivors_at_50 = [d for d, m in zip(workdirs, got, strict=True) if m["steps"] > 50]
    val_at_50 = lambda d: model_val(d, 50)  # noqa: E731
    assert min(val_at_50(d) for d in survivors_at_50) >= max(m["val_accuracy"] for m in first_cut)
    for workdir, metrics in zip(workdirs, got, strict=True):
        assert metrics["val_accuracy"] is not None and metrics["test_accuracy"] is not None
        assert (workdir / "checkpoints" / f"step_{metrics['steps']}.pkl").is_file()  # can go on alone
    assert halving.survivors(4) == 2 and halving.survivors(1) == 1


def model_val(workdir: Path, at: int) -> float:
    """Validation accuracy of a job's checkpoint at step `at`, evaluated from the file."""
    payload = checkpoint.load(workdir / "checkpoints" / f"step_{at}.pkl")
    restored, params = train.restore_model(payload, workdir)
    dataset = data.load(OmegaConf.create(payload["config"])["data"])
    return train_step.accuracy(
        restored.eval_graphdef, params, dataset.val_images, dataset.val_labels, payload["mean_image"]
    )


def test_a_fused_member_continues_alone(tmp_path):
    fused.train_group([cfg_of("lr=0.001"), cfg_of("lr=0.002")], [tmp_path / "a", tmp_path / "b"])
    longer = cfg_of("lr=0.001", "max_steps=300", "resume=true")
    continued = train.train_and_evaluate(longer, tmp_path / "a")
    straight = train.train_and_evaluate(cfg_of("lr=0.001", "max_steps=300"), tmp_path / "straight")
    assert_same_run(continued, straight, tmp_path / "a", tmp_path / "straight", 300)


def test_configs_that_differ_in_other_keys_train_in_separate_programs(tmp_path):
    got = fused.train_group([cfg_of(), cfg_of("batch_size=50")], [tmp_path / "a", tmp_path / "b"])
    assert [m["timings"]["fused_jobs"] for m in got] == [1, 1]
    alone = train.train_and_evaluate(cfg_of("batch_size=50"), tmp_path / "alone")
    assert_same_run(got[1], alone, tmp_path / "b", tmp_path / "alone", 200)
    with pytest.raises(ConfigError, match="data.val_size=0 leaves empty"):
        fused.train_group(
            [cfg_of("data.val_size=0"), cfg_of("data.val_size=0", "lr=0.01")],
            [tmp_path / "c", tmp_path / "d"],
            halving=Halving((50,), 0.5),
        )


def test_grouping_keys_chunks_and_rungs():
    a, b = (cfg_of(f"hidden={h}") for h in (16, 32))
    assert fuse_key(a, pad=True) == fuse_key(b, pad=True)
    assert fuse_key(a, pad=False) != fuse_key(b, pad=False)
    assert fuse_key(a, pad=True) != fuse_key(cfg_of("batch_size=50"), pad=True)
    # Optimizer values are dynamic: members of one program differ in them; its name is not.
    momentum = [cfg_of("optimizer=momentum", f"optimizer.momentum={m}") for m in (0.8, 0.9)]
    assert fuse_key(momentum[0], pad=False) == fuse_key(momentum[1], pad=False)
    assert fuse_key(momentum[0], pad=False) != fuse_key(
        cfg_of("optimizer=momentum", "optimizer.nesterov=true"), pad=False
    )
    assert config.fuse_key({"model": {"hidden": 16}}, paddable=("hidden",)) == config.fuse_key(
        {"model": {"hidden": 8}}, paddable=("hidden",)
    )
    assert [len(c) for c in chunks(list(range(27)), 10)] == [9, 9, 9]
    assert [len(c) for c in chunks(list(range(5)), 2)] == [2, 2, 1]
    assert default_rungs(2000, 0.5) == (500, 1000) and default_rungs(2000, 1 / 3) == (222, 667)
    for bad, message in [
        ({"max_batch": 0}, "max_batch must be >= 1"),
        ({"widths": "wide"}, "widths must be auto, group or pad"),
        ({"hidden": "pad"}, r"hidden is now hydra.launcher.widths \(auto, group or pad\): set widths=pad"),
        ({"keep": 1.0}, "keep must be in"),
    ]:
        with pytest.raises(ConfigError, match=message):
            FusedLauncher(**bad)


# --- through Hydra: python run.py -m hydra/launcher=fused ... -----------------------------------------

CLI_GRID = ["hidden=16,32", "lr=0.001,0.002"]


@pytest.fixture(scope="module")
def basic_cli_sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("basic") / "s"
    result = run_cli("-m", *FAST, *CLI_GRID, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr
    return sweep_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings, programs",
    [(["widths=group"], "2 program(s)"), (["widths=pad"], "1 program(s)")]
    + [(["widths=pad", "max_batch=3"], "1 program(s) (slot pools: 1)")],
    ids=["a program per width", "padded", "padded through a slot pool"],
)
def test_fused_launcher_gives_every_job_what_the_basic_launcher_gives(
    tmp_path, basic_cli_sweep, settings, programs
):
    launcher = ["hydra/launcher=fused", *(f"hydra.launcher.{s}" for s in settings)]
    result = run_cli("-m", *FAST, *CLI_GRID, *launcher, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert f"Launching 4 jobs: 4 fused in {programs}, 0 one by one" in result.stdout
    expected, got = job_metrics(basic_cli_sweep), job_metrics(tmp_path)
    assert got.keys() == expected.keys()
    for name in expected:
        assert_same_run(got[name], expected[name], tmp_path / name, basic_cli_sweep / name, 200)
        for part in (
            ".hydra/config.yaml",
            ".hydra/hydra.yaml",
            ".hydra/overrides.yaml",
            "checkpoints/step_100.pkl",
        ):
            assert (tmp_path / name / part).is_file(), part
        assert list((tmp_path / name).glob("events.out.tfevents.*"))
        log = (tmp_path / name / "run.log").read_text()
        assert "step 150  loss" in log and "test accuracy" in log and "done" in log  # its lines + callback's
    assert "job 4 of 4 done" in result.stdout
    rows = summary.group(summary.read_jobs(tmp_path))
    assert len(rows) == 4 and {r.status for r in rows} == {"ok"}
    assert (tmp_path / "summary.md").is_file() and (tmp_path / "summary.png").is_file()


@pytest.mark.slow
def test_jobs_that_cannot_be_fused_run_as_the_basic_launcher_runs_them(tmp_path, basic_cli_sweep):
    # batch_size differs: two groups of one, each run by the task function itself.
    result = run_cli(
        "-m", *FAST, "hidden=16", "batch_size=100,50", "hydra/launcher=fused", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr
    assert "Launching 2 jobs: 0 fused in 0 program(s), 2 one by one" in result.stdout
    assert {m["status"] for m in job_metrics(tmp_path).values()} == {"ok"}
    assert all("fused_jobs" not in m["timings"] for m in job_metrics(tmp_path).values())

    app = tmp_path / "other_app.py"  # another Hydra app: its task function is never bypassed
    app.write_text(
        "import hydra, pathlib\n"
        "@hydra.main(version_base='1.3', config_path=None)\n"
        "def main(cfg):\n"
        "    pathlib.Path(f'ran-{cfg.x}').write_text('yes')\n"
        "    return cfg.x\n"
        "if __name__ == '__main__':\n"
        "    main()\n"
    )
    other = subprocess.run(
        [
            sys.executable,
            str(app),
            "-m",
            "+x=1,2",
            "hydra/launcher=fused",
            f"hydra.sweep.dir={tmp_path / 'o'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "ran-1").is_file() and (tmp_path / "ran-2").is_file()


@pytest.mark.slow
def test_a_killed_fused_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["-m", *FAST, "max_steps=600", "hidden=16,32", "lr=0.001,0.002", "histograms=false"]
    args += ["hydra/launcher=fused", "hydra.launcher.widths=pad"]
    whole, killed, finished, rerun = killed_and_rerun(args, tmp_path, "*/checkpoints/step_200.pkl", 4)
    assert not finished
    assert "from step 200" in rerun or "from step 400" in rerun
    expected, got = job_metrics(whole), job_metrics(killed)
    assert got.keys() == expected.keys() and len(got) == 4
    for name in expected:
        assert results(got[name]) == results(expected[name]), name
        a, b = params_of(whole / name, 600), params_of(killed / name, 600)
        assert (a["layer1"]["kernel"] == b["layer1"]["kernel"]).all()


@pytest.mark.slow
def test_halving_through_the_launcher_reports_pruned_jobs_in_the_summary(tmp_path):
    args = [
        "-m",
        *FAST,
        "lr=0.0001,0.0003,0.001,0.003",
        "hydra/launcher=fused",
        "hydra.launcher.halving=true",
    ]
    args += ["hydra.launcher.rungs=[50,100]", f"hydra.sweep.dir={tmp_path}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    statuses = sorted(m["status"] for m in job_metrics(tmp_path).values())
    assert statuses == ["ok", "pruned", "pruned", "pruned"]
    text = (tmp_path / "summary.md").read_text()
    assert "1 ok, 3 pruned" in text
    rerun = run_cli(*args)
    assert rerun.returncode == 0 and "finished in an earlier attempt (status pruned): skipped" in rerun.stdout


@pytest.mark.slow
def test_bad_launcher_settings_are_one_line_errors(tmp_path):
    result = run_cli(
        "-m",
        *FAST,
        "hidden=16,32",
        "hydra/launcher=fused",
        "hydra.launcher.widths=wide",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert "hydra.launcher.widths must be auto, group or pad" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    old = run_cli("-m", *FAST, "hidden=16,32", "hydra/launcher=fused", "hydra.launcher.hidden=pad")
    assert old.returncode == 2 and old.stderr.strip().splitlines() == [
        "error: hydra.launcher.hidden is now hydra.launcher.widths (auto, group or pad): set widths=pad"
    ]
    halving = ["hydra/launcher=fused", "hydra.launcher.halving=true", "data.val_size=0", "lr=0.001,0.002"]
    result = run_cli("-m", *FAST, *halving, f"hydra.sweep.dir={tmp_path / 'h'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: objective.metric=val_accuracy ranks a sweep on the validation split, which "
        "data.val_size=0 leaves empty: set data.val_size > 0 (or a train_ objective)"
    ]
    assert not list((tmp_path / "h").glob("*/metrics.json"))  # nothing trained


def test_a_plan_trains_its_groups_and_reports_each_config_by_its_place_in_the_plan(tmp_path):
    # Without a search a config alone in its fuse key gains nothing from a program: the launcher drops
    # it from the plan (it runs as a single run), and every other config must still be told apart.
    cfgs = [cfg_of("hidden=16", "max_steps=50"), cfg_of("max_steps=50", "lr=0.003"), cfg_of("max_steps=50")]
    planned = plan(cfgs, pad_widths=False, max_batch=None).without_singles()
    assert [g.members for g in planned.groups] == [(1, 2)]
    workdirs = [tmp_path / name for name in ("alone", "a", "b")]
    ended = {}
    got = fused.train_plan(planned, workdirs, on_end=lambda i, metrics: ended.setdefault(i, metrics))
    assert got[0] is None and not workdirs[0].exists()
    assert sorted(ended) == [1, 2] and [ended[1], ended[2]] == got[1:]
    for i in (1, 2):
        assert metrics_of(workdirs[i]) == got[i] and got[i]["status"] == "ok"
    assert got[1]["val_accuracy"] != got[2]["val_accuracy"] or got[1]["loss"] != got[2]["loss"]

"""Your own data: data=npz and data=loader through single runs, fused grids, PBT, Optuna and resume;
preprocessing and layouts; bad data refused in one line before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import compose_config, job_metrics, results, run_cli

from sweeper import train
from sweeper.record.checkpoint import CheckpointError
from sweeper.task import data
from sweeper.task.data import DataError
from sweeper.train import fused
from sweeper.train.controllers import PopulationBasedTraining
from sweeper.trial import storage

SMALL = ["batch_size=50", "hidden=16", "max_steps=200", "log_every=50", "checkpoint_every=100"]
SMALL += ["lr=0.01", "histograms=false", "progress=false"]


def write_npz(path: Path, *, seed: int = 0, dtype=np.float32, classes: int = 4, **extra) -> Path:
    """Four learnable classes of (6, 5) examples: class c shifts every value by 1.5 c."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, classes, n)
        x = rng.normal(size=(n, 6, 5)) + y[:, None, None] * 1.5
        return (x * 10 + 30).astype(dtype) if np.dtype(dtype).kind in "iu" else x.astype(dtype), y

    (x_train, y_train), (x_test, y_test) = split(600), split(200)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test} | extra
    np.savez(path, **arrays)
    return path


def npz_cfg(path: Path, *overrides: str):
    return compose_config("data=npz", f"data.path={path}", "data.val_size=100", *SMALL, *overrides)


def test_the_articles_mlp_trains_on_an_npz_of_any_shape(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    metrics = train.train_and_evaluate(npz_cfg(path), tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["test_accuracy"] > 0.6  # chance is 0.25
    dataset = data.load(npz_cfg(path).data)
    assert dataset.info.input_shape == (6, 5) and dataset.info.num_classes == 4
    assert dataset.info.num_train == 500 and dataset.info.num_val == 100
    np.testing.assert_allclose(dataset.mean_image, np.load(path)["x_train"][:500].mean(0), rtol=1e-5)


def test_a_fused_grid_on_an_npz_equals_its_runs_one_by_one(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    grid = [("lr=0.003",), ("lr=0.01", "hidden=8"), ("lr=0.03",)]
    got = fused.train_group([npz_cfg(path, *o) for o in grid], [tmp_path / str(i) for i in range(3)])
    assert {m["timings"]["fused_jobs"] for m in got} == {3}
    for i, overrides in enumerate(grid):
        alone = train.train_and_evaluate(npz_cfg(path, *overrides), tmp_path / f"alone{i}")
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert got[i][key] == pytest.approx(alone[key], abs=1e-5), (overrides, key)


def test_pbt_on_an_npz_keeps_a_population(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    cfgs = [npz_cfg(path, f"lr={lr}", "max_steps=100") for lr in (0.001, 0.003, 0.01, 0.03)]
    pbt = PopulationBasedTraining(interval=50, quantile=0.25, factors=(0.8, 1.25), seed=0)
    got = fused.train_group(cfgs, [tmp_path / str(i) for i in range(4)], pbt=pbt)
    assert [m["status"] for m in got] == ["ok"] * 4 and any(m["lineage"] for m in got)


def test_its_own_validation_split_is_used_and_val_size_with_it_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    x_val, y_val = rng.normal(size=(50, 6, 5)).astype(np.float32), rng.integers(0, 4, 50)
    path = write_npz(tmp_path / "d.npz", x_val=x_val, y_val=y_val)
    dataset = data.load(npz_cfg(path, "data.val_size=0").data)
    assert dataset.info.num_val == 50 and dataset.info.num_train == 600
    np.testing.assert_array_equal(dataset.val_images, x_val)
    with pytest.raises(DataError, match="data.val_size=100 holds out training examples, but the data has"):
        data.load(npz_cfg(path).data)


@pytest.mark.slow
def test_preprocess_center_standardize_and_none(tmp_path):
    path = write_npz(tmp_path / "d.npz", dtype=np.uint8)
    x = np.load(path)["x_train"][:500]
    standardized = data.load(npz_cfg(path, "data.preprocess=standardize").data)
    np.testing.assert_allclose(standardized.scale, 1 / x.std(axis=0, dtype=np.float64), rtol=1e-5)
    raw = data.load(npz_cfg(path, "data.preprocess=none").data)
    assert raw.mean_image is None and raw.scale is None and raw.train_images.dtype == np.uint8
    metrics = train.train_and_evaluate(
        npz_cfg(path, "data.preprocess=standardize", "lr=0.1"), tmp_path / "std"
    )
    assert metrics["status"] == "ok" and metrics["test_accuracy"] > 0.9
    # none: integers reach the model as they are (it trains on them); values already centred train well.
    metrics = train.train_and_evaluate(npz_cfg(path, "data.preprocess=none", "lr=0.0001"), tmp_path / "int")
    assert metrics["status"] == "ok" and metrics["test_accuracy"] is not None
    # Centred by hand, then `none`, trains as `center` does on the raw values.
    floats = dict(np.load(write_npz(tmp_path / "floats.npz")))
    mean = floats["x_train"][:500].mean(axis=0, dtype=np.float32)
    np.savez(tmp_path / "centred.npz", **{k: v - mean if k.startswith("x") else v for k, v in floats.items()})
    by_hand = train.train_and_evaluate(
        npz_cfg(tmp_path / "centred.npz", "data.preprocess=none"), tmp_path / "a"
    )
    centred = train.train_and_evaluate(npz_cfg(tmp_path / "floats.npz"), tmp_path / "b")
    assert by_hand["test_accuracy"] == pytest.approx(centred["test_accuracy"], abs=0.01)
    assert by_hand["val_loss"] == pytest.approx(centred["val_loss"], rel=1e-3)
    with pytest.raises(Exception, match="data.preprocess"):
        train.train_and_evaluate(npz_cfg(path, "data.preprocess=whiten"), tmp_path / "bad")


def test_cifar_shaped_data_in_the_image_layout_is_height_width_channels():
    flat = data.load(compose_config("data=synthetic").data)
    image = data.load(compose_config("data=synthetic", "data.layout=image").data)
    assert image.train_images.shape[1:] == (32, 32, 3) and image.info.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(image.train_images[:, 4, 7, 2], flat.train_images[:, 2 * 1024 + 4 * 32 + 7])
    assert data.describe(compose_config("data=synthetic", "data.layout=image").data).input_shape == (
        32,
        32,
        3,
    )


@pytest.mark.slow
def test_eval_of_an_npz_checkpoint_reproduces_its_test_accuracy_and_image_layout_trains(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    for preprocess in ("center", "standardize"):
        trained = train.train_and_evaluate(
            npz_cfg(path, f"data.preprocess={preprocess}"), tmp_path / preprocess
        )
        evaluated = train.evaluate_checkpoint(
            npz_cfg(path, f"data.preprocess={preprocess}"), tmp_path / preprocess
        )
        assert evaluated["test_accuracy"] == trained["test_accuracy"], preprocess
    image = compose_config("data=synthetic", "data.layout=image", *SMALL, "batch_size=100", "lr=0.001")
    assert train.train_and_evaluate(image, tmp_path / "image")["test_accuracy"] > 0.4  # chance is 0.1


def test_resume_and_eval_refuse_a_run_whose_data_changed(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    train.train_and_evaluate(npz_cfg(path, "max_steps=100"), tmp_path / "run")
    write_npz(path, seed=5)  # other examples under the same name
    with pytest.raises(CheckpointError, match="was written on other data"):
        train.train_and_evaluate(npz_cfg(path, "max_steps=200", "resume=true"), tmp_path / "run")
    with pytest.raises(CheckpointError, match="was written on other data"):
        train.evaluate_checkpoint(npz_cfg(path), tmp_path / "run")


LOADER = """
import numpy as np

def load(n, classes=3):
    rng = np.random.default_rng(0)
    def split(m):
        y = rng.integers(0, classes, m)
        return rng.normal(size=(m, 8)).astype(np.float32) + y[:, None], y
    (x, y), (xt, yt) = split(n), split(n // 4)
    return {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt}
"""


@pytest.mark.slow
def test_a_loader_function_on_pythonpath_trains_and_a_missing_one_names_pythonpath(tmp_path):
    (tmp_path / "my_loader.py").write_text(LOADER)
    args = ["data=loader", "data._target_=my_loader.load", "+data.n=400", "data.val_size=50", *SMALL]
    result = run_cli(*args, f"hydra.run.dir={tmp_path / 'run'}", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test_accuracy"] > 0.6  # chance is 1/3
    missing = run_cli(*args, f"hydra.run.dir={tmp_path / 'missing'}")  # not on PYTHONPATH
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "data._target_=my_loader.load" in missing.stderr and "PYTHONPATH" in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arrays", "says"),
    [
        ({"x_train": "nan"}, "x_train"),
        ({"y_test": "large"}, "y_test holds label"),
        ({"drop": "x_test"}, "x_test"),
        ({"y_train": "short"}, "y_train"),
    ],
)
def test_bad_arrays_are_refused_in_one_line_before_a_sweep_launches(tmp_path, arrays, says):
    rng = np.random.default_rng(0)
    good = {"x_train": rng.normal(size=(60, 4)), "y_train": np.arange(60) % 3}
    good |= {"x_test": rng.normal(size=(20, 4)), "y_test": np.arange(20) % 3}
    if arrays.get("x_train") == "nan":
        good["x_train"][3, 1] = np.nan
    if arrays.get("y_test") == "large":
        good["y_test"][0] = 7
    if arrays.get("y_train") == "short":
        good["y_train"] = good["y_train"][:50]
    good.pop(arrays.get("drop", ""), None)
    np.savez(tmp_path / "bad.npz", **good)
    common = ["data=npz", f"data.path={tmp_path / 'bad.npz'}", "data.val_size=10", "batch_size=10"]
    single = run_cli(*common, f"hydra.run.dir={tmp_path / 'single'}")
    sweep = run_cli("-m", *common, "lr=0.001,0.01", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    for result in (single, sweep):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"error: data.path={tmp_path / 'bad.npz'}") and says in result.stderr
    assert not (tmp_path / "single" / "metrics.json").exists() and not list(
        tmp_path.glob("sweep/*/metrics.json")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher", [[], ["hydra/launcher=fused", "hydra.launcher.max_batch=2"]], ids=["basic", "pool"]
)
def test_an_optuna_study_and_a_relative_path_on_an_npz(tmp_path, launcher):
    write_npz(tmp_path / "d.npz")
    args = ["-m", "sweep=optuna", "data=npz", "data.path=d.npz", "data.val_size=100", *SMALL, *launcher]
    args += [
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.pruner=null",
        "hydra.sweeper.params.hidden='choice(8,16)'",
    ]
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'study'}", "hydra.job.chdir=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(
        study_name="sweeper", storage=storage(str(tmp_path / "study" / "optuna.journal"))
    )
    metrics = job_metrics(tmp_path / "study")
    assert len(study.trials) == 3 and {t.value for t in study.trials} == {
        m["val_accuracy"] for m in metrics.values()
    }
    assert all(results(m)["status"] == "ok" for m in metrics.values())

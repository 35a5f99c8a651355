"""End to end: `python run.py` on synthetic data, its outputs, reproducibility, divergence, eval mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FAST, compose_config, results, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from sweeper import train
from sweeper.record import checkpoint
from sweeper.record.writer import RunWriter


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One real CLI run, shared by the tests that inspect its outputs."""
    workdir = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli(*FAST, "max_steps=300", "progress=true", f"hydra.run.dir={workdir}")
    assert result.returncode == 0, result.stderr
    return workdir, result


@pytest.mark.slow
def test_cli_run_learns_and_leaves_its_outputs(cli_run):
    workdir, result = cli_run
    assert "300/300" in result.stderr  # the progress bar
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 300
    assert metrics["test_accuracy"] > 0.4 and metrics["val_accuracy"] > 0.4  # chance is 0.1
    assert metrics["objective"] == metrics["val_accuracy"]
    assert metrics["wall_time_s"] > 0 and np.isfinite(metrics["loss"])
    timings = metrics["timings"]
    assert timings["compile_s"] > 0 and timings["train_s"] > 0 and timings["steps_per_s"] > 0
    assert timings["data_s"] + timings["compile_s"] + timings["train_s"] < metrics["wall_time_s"]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [
        "step_100.pkl",
        "step_200.pkl",
        "step_300.pkl",
    ]
    assert (workdir / ".hydra" / "config.yaml").is_file() and (workdir / "run.log").is_file()
    log = (workdir / "run.log").read_text()
    for line in (
        "step 0  loss",
        "step 250  loss",
        "val_accuracy",
        "saved checkpoint",
        "test accuracy",
        "total time",
    ):
        assert line in log


def test_tensorboard_events(cli_run):
    workdir, _ = cli_run
    # The events in the run's folder itself, hparams too (no timestamp folder): TensorBoard names the run
    # by its folder.
    assert list(workdir.glob("events.out.tfevents.*")) and not list(workdir.glob("*/events.out.tfevents.*"))
    events = EventAccumulator(str(workdir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "accuracy/train", "accuracy/val", "accuracy/test"} <= set(tags["scalars"])
    # Log points before each step's update, then the run's final value (what HParams shows) at its end.
    assert [e.step for e in events.Scalars("loss/train")] == [0, 50, 100, 150, 200, 250, 300]
    assert [e.step for e in events.Scalars("accuracy/test")] == [300]
    assert [e.step for e in events.Scalars("accuracy/val")] == [0, 50, 100, 150, 200, 250, 300]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert events.Scalars("accuracy/test")[0].value == pytest.approx(metrics["test_accuracy"])
    for tag, key in (
        ("accuracy/train", "train_accuracy"),
        ("accuracy/val", "val_accuracy"),
        ("loss/train", "loss"),
    ):
        assert events.Scalars(tag)[-1].value == pytest.approx(metrics[key]), tag
    tensors = {"tensors/logits", "tensors/weights/layer1/kernel", "tensors/weights/layer2/kernel"}
    assert tensors <= set(tags["histograms"])

    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["hidden"].number_value == 32 and start.hparams["lr"].number_value == 0.001
    assert start.hparams["optimizer.name"].string_value == "sgd"
    assert start.hparams["data.train_size"].number_value == 1200 and "data.root" not in start.hparams
    assert start.hparams["status"].string_value == "ok"
    content = events.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
    end = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info
    assert end.status == api_pb2.STATUS_SUCCESS


@pytest.mark.slow
def test_eval_mode_restores_the_checkpoint(cli_run):
    workdir, _ = cli_run
    metrics = json.loads((workdir / "metrics.json").read_text())
    result = run_cli(*FAST, "mode=eval", f"checkpoint={workdir}", f"hydra.run.dir={workdir}/eval")
    assert result.returncode == 0, result.stderr
    assert "step 300, MLP(hidden=32)" in result.stdout
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in result.stdout


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    cfg = compose_config(*FAST, "max_steps=100", "histograms=false")
    first = train.train_and_evaluate(cfg, tmp_path / "a")
    second = train.train_and_evaluate(cfg, tmp_path / "b")
    assert results(first) == results(second)
    a, b = (checkpoint.load(p / "checkpoints" / "step_100.pkl") for p in (tmp_path / "a", tmp_path / "b"))
    np.testing.assert_array_equal(a["params"]["layer1"]["kernel"], b["params"]["layer1"]["kernel"])
    other = train.train_and_evaluate(compose_config(*FAST, "max_steps=100", "seed=1"), tmp_path / "c")
    assert results(other) != results(first)


def test_divergence_is_a_result_not_a_crash(tmp_path):
    metrics = train.train_and_evaluate(compose_config(*FAST, "lr=10"), tmp_path)
    assert metrics["status"] == "diverged" and metrics["steps"] == 50  # stopped at the first log point
    assert metrics["objective"] == 0.0 and metrics["test_accuracy"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "checkpoints").exists()  # NaN parameters are not worth keeping
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
    end = plugin_data_pb2.HParamsPluginData.FromString(content).session_end_info
    assert end.status == api_pb2.STATUS_FAILURE


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_other_optimizers_train(tmp_path, optimizer):
    lr = {"momentum": "0.0005", "adam": "0.0001"}[optimizer]
    metrics = train.train_and_evaluate(
        compose_config(*FAST, f"optimizer={optimizer}", f"lr={lr}", "histograms=false"), tmp_path
    )
    assert metrics["status"] == "ok" and metrics["val_accuracy"] > 0.25  # chance is 0.1


def test_histograms_of_a_run_blowing_up_do_not_crash_it(tmp_path):
    writer = RunWriter(tmp_path)
    writer.histograms(1, {"huge": np.array([1e22, -3e21, 5.0], np.float32), "nan": np.array([np.nan, 1.0])})
    writer.close()
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})
    events.Reload()
    assert events.Tags()["histograms"] == ["tensors/huge"]  # NaN arrays are skipped, huge ones recorded
    assert events.Histograms("tensors/huge")[0].histogram_value.max == pytest.approx(1e22, rel=1e-6)

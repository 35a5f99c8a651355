"""Checkpoints: round trip, restricted loading, fit checks, and resume after a real SIGKILL."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import FAST, ROOT, compose_config, mlp_spec, results

from sweeper import train
from sweeper.record import checkpoint
from sweeper.record.checkpoint import CheckpointError
from sweeper.task import train_step

PLAIN = (dict, list, str, int, float, bool, type(None), np.ndarray)


def all_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and all_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(all_plain(v) for v in value)
    return isinstance(value, PLAIN)


def test_round_trip_holds_everything_as_plain_values(tmp_path):
    cfg = compose_config(*FAST, "max_steps=100", "optimizer=adam", "lr=0.0001", "histograms=false")
    train.train_and_evaluate(cfg, tmp_path)
    path = checkpoint.latest(tmp_path / "checkpoints")
    assert path.name == "step_100.pkl"
    payload = checkpoint.load(path)
    assert all_plain(payload)
    assert payload["step"] == 100 and payload["config"]["hidden"] == 32
    assert payload["config"]["optimizer"]["name"] == "adam"
    assert (
        payload["data_order"]["epoch"] == 100 // (1000 // 100)
        and payload["data_order"]["batch_in_epoch"] == 0
    )
    assert {"jax", "flax", "optax", "numpy", "python"} <= payload["versions"].keys()
    assert payload["mean_image"].shape == (3072,) and payload["mean_image"].dtype == np.float32
    assert len(payload["opt_state"]) == 9  # adam: count + mu and nu for 4 parameter arrays

    assert payload["model"] == {
        "config": {"_target_": "sweeper.task.model.MLP", "hidden": 32},
        "input_shape": [3072],
        "num_classes": 10,
    }
    params, _ = train_step.init_run(mlp_spec(32), 0)
    restored = checkpoint.restore_opt_state(payload, train_step.init_optimizer(cfg.optimizer, params), path)
    params = checkpoint.restore_params(payload, params, path)
    for saved, leaf in zip(payload["opt_state"], jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(saved, leaf)
    np.testing.assert_array_equal(payload["params"]["layer2"]["kernel"], params["layer2"]["kernel"][...])


def test_checkpoint_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "step_1.pkl"
    path.write_bytes(pickle.dumps({"format": checkpoint.FORMAT, "params": Evil()}))
    with pytest.raises(CheckpointError, match="refused to load global"):
        checkpoint.load(path)
    assert not marker.exists()


def test_truncated_or_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"format": checkpoint.FORMAT, "step": 1}))
    (tmp_path / "half.pkl").write_bytes(good.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        checkpoint.load(tmp_path / "half.pkl")
    (tmp_path / "other.pkl").write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(CheckpointError, match="is not a sweeper checkpoint"):
        checkpoint.load(tmp_path / "other.pkl")
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.resolve(tmp_path / "missing.pkl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        checkpoint.resolve(tmp_path / "empty")


def test_resume_with_another_model_or_seed_is_refused(tmp_path):
    train.train_and_evaluate(compose_config(*FAST, "max_steps=100", "histograms=false"), tmp_path)
    with pytest.raises(CheckpointError, match=r"does not fit the configured model \(.*kernel.*another model"):
        train.train_and_evaluate(compose_config(*FAST, "hidden=16", "resume=true"), tmp_path)
    with pytest.raises(CheckpointError, match="another optimizer"):
        train.train_and_evaluate(compose_config(*FAST, "optimizer=momentum", "resume=true"), tmp_path)
    with pytest.raises(CheckpointError, match="another seed"):
        train.train_and_evaluate(compose_config(*FAST, "seed=5", "resume=true"), tmp_path)


def test_resume_continues_exactly(tmp_path):
    """Stopping at a checkpoint and resuming gives bitwise the parameters of one uninterrupted run."""
    whole = train.train_and_evaluate(compose_config(*FAST, "histograms=false"), tmp_path / "whole")
    train.train_and_evaluate(compose_config(*FAST, "max_steps=100", "histograms=false"), tmp_path / "split")
    resumed = train.train_and_evaluate(
        compose_config(*FAST, "resume=true", "histograms=false"), tmp_path / "split"
    )
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "step_200.pkl") for d in ("whole", "split"))
    for layer in ("layer1", "layer2"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(a["params"][layer][name], b["params"][layer][name])
    assert results(whole) == results(resumed)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    args = [*FAST, "max_steps=1500", "optimizer=momentum", "lr=0.0002", "histograms=false"]

    def run(workdir, *extra):
        return [sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={workdir}", *extra]

    subprocess.run(run(tmp_path / "whole"), check=True, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    process = subprocess.Popen(run(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step_300.pkl").exists():
        assert process.poll() is None and time.monotonic() < deadline, (
            "run ended before its first checkpoints"
        )
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step_1500.pkl").exists()  # it really was interrupted
    assert not (killed / "metrics.json").exists()

    result = subprocess.run(run(killed, "resume=true"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "step_1500.pkl") for d in ("whole", "killed"))
    for layer in ("layer1", "layer2"):
        np.testing.assert_array_equal(a["params"][layer]["kernel"], b["params"][layer]["kernel"])
    for x, y in zip(a["opt_state"], b["opt_state"], strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_format_1_checkpoint_loads_as_the_mlp_under_todays_layer_names(tmp_path):
    cfg = compose_config(*FAST, "max_steps=100", "histograms=false")
    train.train_and_evaluate(cfg, tmp_path / "run")
    path = checkpoint.latest(tmp_path / "run" / "checkpoints")
    payload = pickle.loads(path.read_bytes())
    # As sweeper wrote it before checkpoints kept their model, and before the MLP's layers took the
    # article's numbering.
    payload["params"] = {{"layer1": "hidden", "layer2": "output"}[k]: v for k, v in payload["params"].items()}
    payload["format"] = "sweeper-checkpoint/1"
    del payload["model"]
    old = tmp_path / "old" / "checkpoints" / path.name
    old.parent.mkdir(parents=True)
    old.write_bytes(pickle.dumps(payload))
    loaded = checkpoint.load(old)
    assert set(loaded["params"]) == {"layer1", "layer2"}
    np.testing.assert_array_equal(loaded["params"]["layer1"]["kernel"], payload["params"]["hidden"]["kernel"])
    evaluated = train.evaluate_checkpoint(cfg, old)
    assert evaluated["hidden"] == 32 and evaluated["test_accuracy"] > 0.3

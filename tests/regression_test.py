"""The default run on generated data, pinned: the code around the article's model and training loop may
change, its numbers may not. Pinned from the code before the package took its current layout (x86-64
CPU, jax 0.10.2); a change here is a change of results, to explain, never to re-pin in passing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_config

from sweeper import train
from sweeper.record import checkpoint

# metrics.json of `python run.py data=synthetic`: 2000 steps of the article's defaults.
PINNED = {"status": "ok", "steps": 2000, "train_accuracy": 1.0, "val_accuracy": 0.702, "test_accuracy": 0.729}
PINNED_LOSS = 3.3584322929382324  # the last segment's mean training loss, L2 term included
# Sum and absolute sum of each parameter array of checkpoints/step_2000.pkl.
PINNED_PARAMS = {
    ("layer1", "bias"): (-0.0038126247344791864, 0.005355522808343949),
    ("layer1", "kernel"): (4.031946519071118, 3922.9459691339616),
    ("layer2", "bias"): (-2.9831426218152046e-09, 0.0031912525737425312),
    ("layer2", "kernel"): (0.8112308949348517, 61.01472752154223),
}


def test_the_default_run_on_generated_data_gives_its_pinned_numbers(tmp_path):
    metrics = train.train_and_evaluate(compose_config("data=synthetic"), tmp_path)
    assert {key: metrics[key] for key in PINNED} == PINNED
    assert metrics["objective"] == PINNED["val_accuracy"]
    assert metrics["loss"] == pytest.approx(PINNED_LOSS, rel=1e-6)
    params = checkpoint.load(tmp_path / "checkpoints" / "step_2000.pkl")["params"]
    for (layer, name), (total, size) in PINNED_PARAMS.items():
        array = np.asarray(params[layer][name], np.float64)
        assert (array.sum(), np.abs(array).sum()) == pytest.approx((total, size), rel=1e-5, abs=1e-9)

"""Model shapes and initialisation, the loss against a hand computation, and the batch order."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import mlp_spec
from flax import nnx

from sweeper.task import data, models, train_step

# A normal truncated at +-2 sigma without variance correction keeps this fraction of its stddev.
TRUNCATED_STD = 0.8796


def init(hidden: int, seed: int):
    spec = mlp_spec(hidden)
    params, order_seed = train_step.init_run(spec, seed)
    return models.abstract(spec).graphdef, params, order_seed


def test_shapes_and_forward():
    graphdef, params, _ = init(120, 0)
    pure = nnx.to_pure_dict(params)
    assert {k: {n: v.shape for n, v in layer.items()} for k, layer in pure.items()} == {
        "layer1": {"kernel": (120, 3072), "bias": (120,)},  # kernels are stored (out, in)
        "layer2": {"kernel": (10, 120), "bias": (10,)},
    }
    logits = nnx.merge(graphdef, params)(jnp.ones((4, 3072)))
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32


@pytest.mark.parametrize("layer,fan_in", [("layer1", 3072), ("layer2", 240)])
def test_init_is_truncated_normal_with_stddev_one_over_sqrt_fan_in(layer, fan_in):
    _, params, _ = init(240, 0)
    kernel = np.asarray(nnx.to_pure_dict(params)[layer]["kernel"])
    bias = np.asarray(nnx.to_pure_dict(params)[layer]["bias"])
    stddev = 1 / np.sqrt(fan_in)
    assert np.abs(kernel).max() <= 2 * stddev  # redrawn beyond 2 stddev
    assert np.abs(kernel).max() > 1.9 * stddev  # but reaching out to it
    tolerance = 4 * TRUNCATED_STD * stddev / np.sqrt(2 * kernel.size)
    assert kernel.std() == pytest.approx(TRUNCATED_STD * stddev, abs=tolerance)
    assert abs(kernel.mean()) < 4 * stddev / np.sqrt(kernel.size)
    assert not bias.any()


def test_init_derives_from_seed():
    same = [np.asarray(nnx.to_pure_dict(init(16, 7)[1])["layer1"]["kernel"]) for _ in range(2)]
    other = np.asarray(nnx.to_pure_dict(init(16, 8)[1])["layer1"]["kernel"])
    np.testing.assert_array_equal(*same)
    assert not np.array_equal(same[0], other)
    assert not np.array_equal(init(16, 7)[2], init(16, 8)[2])  # the data order too


def test_loss_matches_a_hand_computation():
    graphdef, params, _ = init(5, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (6, 3072)).astype(np.float32)
    labels = np.array([0, 3, 9, 1, 1, 7])
    reg = 0.3
    trained, rest = nnx.split_state(params, nnx.Param, ...)
    loss, (logits, _) = train_step.loss_fn(trained, rest, graphdef, jnp.asarray(x), jnp.asarray(labels), reg)

    p = {
        k: {n: np.asarray(v, np.float64) for n, v in layer.items()}
        for k, layer in nnx.to_pure_dict(params).items()
    }
    hidden = np.maximum(x @ p["layer1"]["kernel"].T + p["layer1"]["bias"], 0)
    z = hidden @ p["layer2"]["kernel"].T + p["layer2"]["bias"]
    log_softmax = (
        z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    )
    cross_entropy = -log_softmax[np.arange(6), labels].mean()
    l2 = sum((p[k]["kernel"] ** 2).sum() / 2 for k in ("layer1", "layer2"))  # biases excluded
    np.testing.assert_allclose(logits, z, rtol=1e-4, atol=1e-3)
    assert float(loss) == pytest.approx(cross_entropy + reg * l2, rel=1e-5)


def test_biases_are_not_regularised():
    _, params, _ = init(5, 1)
    before = float(models.l2_penalty(params))
    shifted = jax.tree.map(lambda v: v, params)
    nnx.replace_by_pure_dict(shifted, {"layer1": {"bias": np.full(5, 3.0, np.float32)}})
    assert float(models.l2_penalty(shifted)) == pytest.approx(before)
    nnx.replace_by_pure_dict(shifted, {"layer2": {"kernel": np.full((10, 5), 3.0, np.float32)}})
    assert float(models.l2_penalty(shifted)) > before  # kernels are


def test_each_image_once_per_epoch_and_seeded():
    order = data.BatchOrder(np.array([1, 2], np.uint32), num_images=1050, batch_size=100)
    assert order.steps_per_epoch == 10  # the remainder of 50 is skipped, as the article's generator does
    epoch0 = order.indices(0, 10)
    assert epoch0.shape == (10, 100) and len(np.unique(epoch0)) == 1000
    epoch1 = order.indices(10, 20)
    assert len(np.unique(epoch1)) == 1000 and not np.array_equal(epoch0, epoch1)  # reshuffled
    # Any window of steps gives the same batches as the whole, across the epoch boundary too.
    np.testing.assert_array_equal(order.indices(7, 13), np.concatenate([epoch0[7:], epoch1[:3]]))
    again = data.BatchOrder(np.array([1, 2], np.uint32), 1050, 100)
    np.testing.assert_array_equal(again.indices(0, 20), order.indices(0, 20))
    other = data.BatchOrder(np.array([1, 3], np.uint32), 1050, 100)
    assert not np.array_equal(other.indices(0, 10), epoch0)

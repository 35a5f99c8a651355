"""The maths of training and evaluation: loss, one gradient step, a scanned segment of steps, predictions.

Pure functions over plain pytrees. A segment advances one run's state, or the states of K runs stacked
on a leading member axis (`jax.vmap` around the same step); the learning rate and L2 constant are
arrays, so that members differ in them, and a schedule changes them, without recompiling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sweeper.config import ConfigError
from sweeper.task import data, model

# A dataset's Info rides along with its arrays (DeviceSplits.info) as static data: device_put and
# tree maps pass it through untouched.
jax.tree_util.register_static(data.Info)


class DeviceData(NamedTuple):
    """Training inputs (in their own dtype: CIFAR-10's uint8) and labels resident on the device, and what
    data.preprocess applies to them: the training mean (None for `none`) and 1/std (`standardize` only)."""

    images: jax.Array
    labels: jax.Array
    mean_image: jax.Array | None
    scale: jax.Array | None = None

    @property
    def norm(self) -> tuple[jax.Array | None, jax.Array | None]:
        """(mean, 1/std): the preprocessing's statistics, as `preprocess` takes them."""
        return self.mean_image, self.scale


class DeviceSplits(NamedTuple):
    """A dataset on the device: training data, and (images, labels) of the val and test splits."""

    train: DeviceData
    val: tuple[jax.Array, jax.Array]
    test: tuple[jax.Array, jax.Array]
    info: data.Info  # sizes, shapes, classes and fingerprint of the dataset

    def images_and_labels(self, split: str) -> tuple[jax.Array, jax.Array]:
        """(images, labels) of `split`: train, val or test."""
        return (self.train.images, self.train.labels) if split == "train" else getattr(self, split)

    def size(self, split: str) -> int:
        """How many examples `split` holds."""
        return len(self.images_and_labels(split)[1])


def to_device(dataset: data.Dataset) -> DeviceSplits:
    """Copy a loaded dataset to the default device, once per process."""
    optional = lambda x: None if x is None else jnp.asarray(x)  # noqa: E731
    return DeviceSplits(
        DeviceData(
            jnp.asarray(dataset.train_images),
            jnp.asarray(dataset.train_labels),
            optional(dataset.mean_image),
            optional(dataset.scale),
        ),
        (jnp.asarray(dataset.val_images), jnp.asarray(dataset.val_labels)),
        (jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)),
        dataset.info,
    )


def optimizer_factory(opt: Any) -> Callable[[Any], optax.GradientTransformation]:
    """`learning_rate -> optax optimizer` for the optimizer config `opt` (sgd, momentum or adam).

    The learning rate may be a traced array: none of these keeps it in its state.
    """
    if opt.name == "sgd":
        return lambda learning_rate: optax.sgd(learning_rate)
    if opt.name == "momentum":
        return lambda learning_rate: optax.sgd(learning_rate, momentum=opt.momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return lambda learning_rate: optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    raise ConfigError(f"optimizer.name must be sgd, momentum or adam, got {opt.name!r}")


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_run(
    hidden: int, seed: int | jax.Array, shape: model.Shape = model.CIFAR10
) -> tuple[nnx.State, jax.Array]:
    """(initial params, data-order seed words), both derived from the one root key `seed`; the model
    built for `shape` (input shape, classes)."""
    init_key, order_key = jax.random.split(jax.random.key(seed))
    return model.init_params(hidden, init_key, shape), jax.random.key_data(order_key)


def preprocess(images: jax.Array, norm: tuple | jax.Array) -> jax.Array:
    """data.preprocess on the device: minus the training mean (`center`: the article's only step, uint8
    pixels to float32 on the 0..255 scale), then times 1/std (`standardize`); as stored for `none`."""
    mean, scale = norm if isinstance(norm, tuple) else (norm, None)  # a bare mean: `center`
    if mean is None:
        return images
    centered = images.astype(jnp.float32) - mean
    return centered if scale is None else centered * scale


def loss_fn(
    params: nnx.State, graphdef: nnx.GraphDef, x: jax.Array, labels: jax.Array, reg: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy + reg * sum(W^2)/2 over the weight matrices; returns (loss, logits)."""
    logits = nnx.merge(graphdef, params)(x)
    with jax.named_scope("loss"):
        with jax.named_scope("cross_entropy"):
            cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        with jax.named_scope("l2"):
            l2 = reg * model.l2_penalty(params)
        return cross_entropy + l2, logits


class TrainState(NamedTuple):
    """What a segment changes, donated to it: parameters, optimizer state, whether the loss has stayed
    finite (a run whose loss did not is frozen), and the step. Stacked: a leading member axis."""

    params: nnx.State
    opt_state: optax.OptState
    alive: jax.Array
    step: jax.Array


class Hyper(NamedTuple):
    """The per-run constants of a segment: learning rate, L2 constant, and, where narrower runs are
    padded to a common width, the mask of each run's own hidden units (else None)."""

    lr: jax.Array
    reg: jax.Array
    unit_mask: jax.Array | None


def gradient_step(
    graphdef: nnx.GraphDef,
    make_optimizer: Callable[[Any], optax.GradientTransformation],
    params: nnx.State,
    opt_state: optax.OptState,
    alive: jax.Array,
    hyper: Hyper,
    batch_idx: jax.Array,
    train: DeviceData,
) -> tuple[nnx.State, optax.OptState, jax.Array, jax.Array, jax.Array]:
    """One optimizer step on the batch `batch_idx`: (params, opt_state, alive, loss, batch accuracy), the
    loss and accuracy measured before the update, as the article logs them. A run whose loss is not
    finite keeps its state from before this step."""
    # The named scopes are what TensorBoard's Graphs tab groups ops by (sweeper.record.graph).
    with jax.named_scope("batch"):
        x = preprocess(train.images[batch_idx], train.norm)
        labels = train.labels[batch_idx]
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, graphdef, x, labels, hyper.reg)
    with jax.named_scope("optimizer"):
        updates, new_opt_state = make_optimizer(hyper.lr).update(grads, opt_state, params)
        if hyper.unit_mask is not None:
            updates = model.mask_units(updates, hyper.unit_mask)
        new_params = optax.apply_updates(params, updates)
    with jax.named_scope("keep_if_finite"):
        alive = alive & jnp.isfinite(loss)
        keep = lambda new, old: jnp.where(alive, new, old)  # noqa: E731
        new_params = jax.tree.map(keep, new_params, params)
        new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    with jax.named_scope("accuracy"):
        batch_accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return new_params, new_opt_state, alive, loss, batch_accuracy


def make_segment(
    graphdef: nnx.GraphDef, make_optimizer: Callable[[Any], optax.GradientTransformation], stacked: bool
) -> Callable:
    """A jitted `segment(state, hyper, train, batch_indices) -> (state, (losses, accuracies))` that runs
    one step per row of `batch_indices`, with `state` donated.

    Stacked, every leaf of `state` and `hyper` has a leading member axis; `batch_indices` is (steps,
    batch) when the members share their batches (one seed: XLA merges their products into one wide
    matmul) or (steps, members, batch); losses and accuracies come back as (steps, members).
    """
    one_run = functools.partial(gradient_step, graphdef, make_optimizer)

    def step(state: TrainState, batch_idx: jax.Array, hyper: Hyper, train: DeviceData):
        run = one_run
        if stacked:
            run = jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0 if batch_idx.ndim == 2 else None, None))
        params, opt_state, alive, loss, accuracy = run(
            state.params, state.opt_state, state.alive, hyper, batch_idx, train
        )
        return TrainState(params, opt_state, alive, state.step + 1), (loss, accuracy)

    def segment(state: TrainState, hyper: Hyper, train: DeviceData, batch_indices: jax.Array):
        return jax.lax.scan(functools.partial(step, hyper=hyper, train=train), state, batch_indices)

    return jax.jit(segment, donate_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, norm: tuple):
    """Logits for a batch of inputs, preprocessed with `norm` (see `preprocess`)."""
    return nnx.merge(graphdef, params)(preprocess(images, norm))


@functools.partial(jax.jit, static_argnums=0)
def correct_and_loss(
    graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, labels: jax.Array, norm: tuple
) -> tuple[jax.Array, jax.Array]:
    """(how many `images` are classified correctly, the sum of their cross-entropy losses without the L2
    term), in chunks of EVAL_CHUNK inside one compiled loop.

    The last chunk is slid back to end at the last image and its already-counted rows masked out, so
    every chunk has one static shape and nothing is padded or copied.
    """
    n = images.shape[0]
    chunk = min(data.EVAL_CHUNK, n)

    def measure(i, totals):
        correct, loss = totals
        start = i * chunk
        begin = jnp.minimum(start, n - chunk)
        x = jax.lax.dynamic_slice_in_dim(images, begin, chunk)
        y = jax.lax.dynamic_slice_in_dim(labels, begin, chunk)
        logits = predict(graphdef, params, x, norm)
        fresh = begin + jnp.arange(chunk) >= start
        hits = jnp.argmax(logits, axis=-1) == y
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return correct + jnp.sum(hits & fresh), loss + jnp.sum(jnp.where(fresh, losses, 0.0))

    return jax.lax.fori_loop(0, -(-n // chunk), measure, (0, jnp.float32(0.0)))


def evaluate(
    graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, labels: jax.Array, norm: tuple
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss without the L2 term) over `images`."""
    correct, loss = correct_and_loss(graphdef, params, images, labels, norm)
    return int(correct) / len(images), float(loss) / len(images)


def accuracy(
    graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, labels: jax.Array, norm: tuple
) -> float:
    """Fraction of `images` classified correctly."""
    return evaluate(graphdef, params, images, labels, norm)[0]


@functools.partial(jax.jit, static_argnums=0)
def stacked_correct_and_loss(graphdef, params, images, labels, norm) -> tuple[jax.Array, jax.Array]:
    """(members,) correct counts and (members,) loss sums of each member of stacked `params`."""
    measure = lambda p: correct_and_loss(graphdef, p, images, labels, norm)  # noqa: E731
    return jax.vmap(measure)(params)


@functools.partial(jax.jit, static_argnums=0)
def stacked_logits(graphdef, params, images, batch_idx, norm) -> jax.Array:
    """(members, batch, 10) logits of each member of stacked `params` on its batch `batch_idx[member]`."""
    logits = lambda p, idx: predict(graphdef, p, images[idx], norm)  # noqa: E731
    return jax.vmap(logits)(params, batch_idx)


def members_correct_and_loss(
    graphdef, params, images, labels, norm, *, stacked: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(members,) correct counts and (members,) cross-entropy sums over `images`: of stacked `params`,
    or of one run's as a single member."""
    if stacked:
        correct, loss = stacked_correct_and_loss(graphdef, params, images, labels, norm)
    else:
        correct, loss = (v[None] for v in correct_and_loss(graphdef, params, images, labels, norm))
    return np.asarray(correct), np.asarray(loss)


def members_logits(graphdef, params, images, batch_idx, norm, *, stacked: bool) -> np.ndarray:
    """(members, batch, 10) logits of each member on its batch `batch_idx[member]`: of stacked `params`,
    or of one run's as a single member."""
    if stacked:
        return np.asarray(stacked_logits(graphdef, params, images, batch_idx, norm))
    return np.asarray(predict(graphdef, params, images[batch_idx[0]], norm))[None]


def weight_tensors(params: Any) -> dict[str, np.ndarray]:
    """The parameters by TensorBoard tag (`weights/layer1/kernel`, ...), for histograms."""
    pure = params if isinstance(params, dict) else nnx.to_pure_dict(params)
    return {
        f"weights/{layer}/{name}": np.asarray(value)
        for layer, leaves in pure.items()
        for name, value in leaves.items()
    }

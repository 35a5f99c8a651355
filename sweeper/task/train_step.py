"""The maths of training and evaluation: loss, one gradient step, a scanned segment of steps, predictions.

Pure functions over plain pytrees. A segment advances one run's state, or the states of K runs stacked
on a leading member axis (`jax.vmap` around the same step); the learning rate, the L2 constant and the
optimizer's numeric keys are arrays, so that members differ in them, and a schedule changes them, without
recompiling. The model is any NNX module (sweeper.task.models), merged from its graph and state inside
the step: its Params are trained, the rest of its state (batch statistics, RNG counts) is carried.
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

from sweeper import config
from sweeper.config import ConfigError
from sweeper.task import data, models

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


OPTIMIZERS = {"sgd": optax.sgd, "momentum": optax.sgd, "adam": optax.adam}  # optimizer.name


def dynamic_keys(opt: Any) -> tuple[str, ...]:
    """The optimizer config's numeric keys (momentum, b1, b2, eps, ...): optax takes them as arrays, so
    members of one program differ in them, and schedules change them, without recompiling."""
    return config.optimizer_numeric_keys(opt)


def optimizer_values(opt: Any) -> dict[str, float]:
    """The values of the optimizer config's dynamic keys."""
    return {key: float(opt[key]) for key in dynamic_keys(opt)}


def optimizer_factory(opt: Any) -> Callable[..., optax.GradientTransformation]:
    """`(learning_rate, {key: value}) -> optax optimizer` for the optimizer config `opt` (sgd, momentum or
    adam), its dynamic keys given as (possibly traced) values, the others (nesterov) fixed.

    None of these keeps its hyperparameters in its state, so traced values change nothing else.
    """
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name must be sgd, momentum or adam, got {opt.name!r}")
    make = OPTIMIZERS[opt.name]
    fixed = {k: v for k, v in opt.items() if k != "name" and k not in dynamic_keys(opt)}

    def optimizer(learning_rate: Any, values: dict[str, Any] | None = None) -> optax.GradientTransformation:
        return make(learning_rate, **fixed, **(values or {}))

    return optimizer


def init_optimizer(opt: Any, state: nnx.State) -> Any:
    """A fresh optimizer state for the Params of a model `state`."""
    params, _ = nnx.split_state(state, nnx.Param, ...)
    return optimizer_factory(opt)(0.0, optimizer_values(opt)).init(params)


@functools.partial(jax.jit, static_argnums=0)
def init_run(spec: models.Spec, seed: int | jax.Array) -> tuple[nnx.State, jax.Array]:
    """(initial model state, data-order seed words), both derived from the one root key `seed`; the
    model `spec` describes."""
    init_key, order_key = jax.random.split(jax.random.key(seed))
    return models.init_state(spec, init_key), jax.random.key_data(order_key)


def preprocess(images: jax.Array, norm: tuple | jax.Array) -> jax.Array:
    """data.preprocess on the device: minus the training mean (`center`: the article's only step, uint8
    pixels to float32 on the 0..255 scale), then times 1/std (`standardize`); as stored for `none`."""
    mean, scale = norm if isinstance(norm, tuple) else (norm, None)  # a bare mean: `center`
    if mean is None:
        return images
    centered = images.astype(jnp.float32) - mean
    return centered if scale is None else centered * scale


def apply(graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array) -> tuple[jax.Array, nnx.State]:
    """(the model's logits for `x`, its state after the call: batch statistics and RNG counts moved)."""
    module = nnx.merge(graphdef, models.data_to_keys(state), copy=True)  # fresh Variables at this trace level
    logits = module(x)
    return logits, models.keys_to_data(nnx.state(module))


def loss_fn(
    params: nnx.State,
    rest: nnx.State,
    graphdef: nnx.GraphDef,
    x: jax.Array,
    labels: jax.Array,
    reg: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, nnx.State]]:
    """Mean softmax cross-entropy + reg * sum(W^2)/2 over the kernel-like Params (sweeper.task.models);
    returns (loss, (logits, the model's state after the call))."""
    logits, after = apply(graphdef, nnx.merge_state(params, rest), x)
    with jax.named_scope("loss"):
        with jax.named_scope("cross_entropy"):
            cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        with jax.named_scope("l2"):
            l2 = reg * models.l2_penalty(params)
        return cross_entropy + l2, (logits, after)


class TrainState(NamedTuple):
    """What a segment changes, donated to it: the model's state (its Params and the rest of its
    variables), optimizer state, whether the loss has stayed finite (a run whose loss did not is frozen),
    and the step. Stacked: a leading member axis."""

    params: nnx.State
    opt_state: optax.OptState
    alive: jax.Array
    step: jax.Array


class Hyper(NamedTuple):
    """The per-run constants of a segment: learning rate, L2 constant, the optimizer's dynamic keys
    ({momentum: ...}), and, where narrower runs are padded to a common width, the mask of each run's own
    units per paddable model key ({hidden: (width,)}, else None)."""

    lr: jax.Array
    reg: jax.Array
    optimizer: dict[str, jax.Array]
    unit_mask: dict[str, jax.Array] | None


def gradient_step(
    graphdef: nnx.GraphDef,
    padding: models.Padding,
    make_optimizer: Callable[..., optax.GradientTransformation],
    state: nnx.State,
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
    params, rest = nnx.split_state(state, nnx.Param, ...)
    (loss, (logits, after)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, rest, graphdef, x, labels, hyper.reg
    )
    with jax.named_scope("optimizer"):
        updates, new_opt_state = make_optimizer(hyper.lr, hyper.optimizer).update(grads, opt_state, params)
        if hyper.unit_mask is not None:
            updates = padding.mask(updates, hyper.unit_mask)
        new_params = optax.apply_updates(params, updates)
        _, new_rest = nnx.split_state(after, nnx.Param, ...)
        new_state = nnx.merge_state(new_params, new_rest)
    with jax.named_scope("keep_if_finite"):
        alive = alive & jnp.isfinite(loss)
        keep = lambda new, old: jnp.where(alive, new, old)  # noqa: E731
        new_state = jax.tree.map(keep, new_state, state)
        new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    with jax.named_scope("accuracy"):
        batch_accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return new_state, new_opt_state, alive, loss, batch_accuracy


def make_segment(
    graphdef: nnx.GraphDef,
    padding: models.Padding,
    make_optimizer: Callable[..., optax.GradientTransformation],
    stacked: bool,
    scan: bool = True,
) -> Callable:
    """A jitted `segment(state, hyper, train, batch_indices) -> (state, (losses, accuracies))` that runs
    one step per row of `batch_indices`, with `state` donated: one `lax.scan`, or with `scan=False` a
    loop over one jitted step (`SteppedSegment`).

    Stacked, every leaf of `state` and `hyper` has a leading member axis; `batch_indices` is (steps,
    batch) when the members share their batches (one seed: XLA merges their products into one wide
    matmul) or (steps, members, batch); losses and accuracies come back as (steps, members).
    """
    one_run = functools.partial(gradient_step, graphdef, padding, make_optimizer)

    def step(state: TrainState, batch_idx: jax.Array, hyper: Hyper, train: DeviceData):
        run = one_run
        if stacked and state.alive.shape[0] == 1:
            run = functools.partial(_as_row, one_run)
        elif stacked:
            run = jax.vmap(one_run, in_axes=(0, 0, 0, 0, 0 if batch_idx.ndim == 2 else None, None))
        params, opt_state, alive, loss, accuracy = run(
            state.params, state.opt_state, state.alive, hyper, batch_idx, train
        )
        return TrainState(params, opt_state, alive, state.step + 1), (loss, accuracy)

    def segment(state: TrainState, hyper: Hyper, train: DeviceData, batch_indices: jax.Array):
        return jax.lax.scan(functools.partial(step, hyper=hyper, train=train), state, batch_indices)

    if not scan:
        return SteppedSegment(lambda state, hyper, train, batch_idx: step(state, batch_idx, hyper, train))
    return jax.jit(segment, donate_argnums=0)


def _as_row(
    one_run: Callable, params, opt_state, alive, hyper: Hyper, batch_idx: jax.Array, train: DeviceData
):
    """`one_run` on a member axis of one, as the run alone computes it: XLA:CPU runs a batched matmul of
    one member 10-20% slower than the plain one (`make bench-rows`)."""
    row = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)  # noqa: E731
    out = one_run(
        row(params),
        row(opt_state),
        row(alive),
        row(hyper),
        batch_idx[0] if batch_idx.ndim == 2 else batch_idx,
        train,
    )
    return jax.tree.map(lambda leaf: leaf[None], out)


class SteppedSegment:
    """A segment as a Python loop over one jitted step (state donated), with the jitted segment's
    interface (`.lower(*args).compile()`, then a call on the same arguments).

    XLA:CPU runs a convolution inside a scan's while loop far slower than the same step dispatched on its
    own: the example CNN's step took 117 ms scanned and 7.5 ms alone (2026-12-05, 2-core EPYC, jax 0.10.2),
    where the MLP's scan saves the 0.2 ms a step dispatch costs. sweeper.train.program picks this form for
    such models on a CPU (sweeper.task.models.Abstract.convolutional)."""

    def __init__(self, one_step: Callable):
        self.one_step = jax.jit(one_step, donate_argnums=0)

    def lower(self, state: TrainState, hyper: Hyper, train: DeviceData, batch_indices: Any) -> SteppedSegment:
        self.lowered = self.one_step.lower(state, hyper, train, batch_indices[0])
        return self

    def compile(self) -> Callable:
        compiled = self.lowered.compile()

        def run(state: TrainState, hyper: Hyper, train: DeviceData, batch_indices: Any):
            losses, accuracies = [], []
            for batch_idx in batch_indices:
                state, (loss, accuracy) = compiled(state, hyper, train, batch_idx)
                losses.append(loss)
                accuracies.append(accuracy)
            return state, (jnp.stack(losses), jnp.stack(accuracies))

        run.memory_analysis = compiled.memory_analysis  # what sweeper.memory.check_compiled reads
        return run


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, norm: tuple):
    """Logits for a batch of inputs, preprocessed with `norm` (see `preprocess`), by the model `graphdef`
    (its evaluation graph: Dropout off, BatchNorm on its running averages) with state `params`."""
    return apply(graphdef, params, preprocess(images, norm))[0]


@functools.partial(jax.jit, static_argnums=(0, 5))
def correct_and_loss(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images: jax.Array,
    labels: jax.Array,
    norm: tuple,
    chunk: int = data.EVAL_CHUNK,
) -> tuple[jax.Array, jax.Array]:
    """(how many `images` are classified correctly, the sum of their cross-entropy losses without the L2
    term), in chunks of `chunk` examples (sweeper.memory.eval_chunk) inside one compiled loop.

    The last chunk is slid back to end at the last image and its already-counted rows masked out, so
    every chunk has one static shape and nothing is padded or copied.
    """
    n = images.shape[0]
    chunk = min(chunk, n)

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
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images: jax.Array,
    labels: jax.Array,
    norm: tuple,
    chunk: int = data.EVAL_CHUNK,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss without the L2 term) over `images`."""
    correct, loss = correct_and_loss(graphdef, params, images, labels, norm, chunk)
    return int(correct) / len(images), float(loss) / len(images)


def accuracy(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images: jax.Array,
    labels: jax.Array,
    norm: tuple,
    chunk: int = data.EVAL_CHUNK,
) -> float:
    """Fraction of `images` classified correctly."""
    return evaluate(graphdef, params, images, labels, norm, chunk)[0]


@functools.partial(jax.jit, static_argnums=(0, 5))
def stacked_correct_and_loss(graphdef, params, images, labels, norm, chunk) -> tuple[jax.Array, jax.Array]:
    """(members,) correct counts and (members,) loss sums of each member of stacked `params`."""
    measure = lambda p: correct_and_loss(graphdef, p, images, labels, norm, chunk)  # noqa: E731
    return jax.vmap(measure)(params)


@functools.partial(jax.jit, static_argnums=0)
def stacked_logits(graphdef, params, images, batch_idx, norm) -> jax.Array:
    """(members, batch, 10) logits of each member of stacked `params` on its batch `batch_idx[member]`."""
    logits = lambda p, idx: predict(graphdef, p, images[idx], norm)  # noqa: E731
    return jax.vmap(logits)(params, batch_idx)


def members_correct_and_loss(
    graphdef, params, images, labels, norm, *, stacked: bool, chunk: int = data.EVAL_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """(members,) correct counts and (members,) cross-entropy sums over `images`, `chunk` examples at a
    time: of stacked `params`, or of one run's as a single member."""
    if stacked:
        correct, loss = stacked_correct_and_loss(graphdef, params, images, labels, norm, chunk)
    else:
        correct, loss = (v[None] for v in correct_and_loss(graphdef, params, images, labels, norm, chunk))
    return np.asarray(correct), np.asarray(loss)


def members_logits(graphdef, params, images, batch_idx, norm, *, stacked: bool) -> np.ndarray:
    """(members, batch, 10) logits of each member on its batch `batch_idx[member]`: of stacked `params`,
    or of one run's as a single member."""
    if stacked:
        return np.asarray(stacked_logits(graphdef, params, images, batch_idx, norm))
    return np.asarray(predict(graphdef, params, images[batch_idx[0]], norm))[None]


def weight_tensors(params: Any) -> dict[str, np.ndarray]:
    """The model's floating-point variables by TensorBoard tag (`weights/layer1/kernel`, any nesting):
    Params and batch statistics, for histograms (RNG keys and counts left out)."""
    pure = params if isinstance(params, dict) else nnx.to_pure_dict(params)
    flat = jax.tree_util.tree_flatten_with_path(pure)[0]
    return {
        "weights/" + "/".join(models.path_names(path)): np.asarray(value)
        for path, value in flat
        if np.issubdtype(np.asarray(value).dtype, np.floating)
    }

"""The article's model: 3072 -> hidden (ReLU) -> 10, fully connected, as a Flax NNX module; on other
data, (its input values, flattened) -> hidden -> (its classes)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sweeper.task.data import IMAGE_SIZE, NUM_CLASSES

Shape = tuple[tuple[int, ...], int]  # what a model is built for: (one input's shape, number of classes)
CIFAR10: Shape = ((IMAGE_SIZE,), NUM_CLASSES)


class Dense(nnx.Module):
    """A fully connected layer initialised as the article's, with its kernel stored (out, in).

    Weights come from TF1's `truncated_normal_initializer` with stddev 1/sqrt(fan_in) (redrawn beyond
    2 stddev, no variance correction); biases are zero. The (out, in) layout is for speed: the weight
    gradient is then dh^T @ x, with both operands in their natural layout. On XLA:CPU that made the
    article's scanned training step about 1.3x faster (median 7.4 -> 5.6 ms) than nnx.Linear's
    (in, out) kernel, whose gradient x^T @ dh runs XLA's dot at half speed (benchmarks/RESULTS.md).
    """

    def __init__(self, fan_in: int, fan_out: int, *, rngs: nnx.Rngs):
        init = jax.nn.initializers.truncated_normal(stddev=1.0 / fan_in**0.5, lower=-2.0, upper=2.0)
        self.kernel = nnx.Param(init(rngs.params(), (fan_out, fan_in)))
        self.bias = nnx.Param(jnp.zeros((fan_out,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...].T + self.bias[...]


# What checkpoints written before the layers took the article's names called them.
FORMER_LAYER_NAMES = {"hidden": "layer1", "output": "layer2"}


class MLP(nnx.Module):
    """Two fully connected layers, `layer1` (3072 -> hidden, ReLU) and `layer2` (hidden -> 10), as the
    article numbers them; weights truncated-normal with stddev 1/sqrt(fan_in), biases zero."""

    def __init__(self, hidden: int, *, shape: Shape = CIFAR10, rngs: nnx.Rngs):
        input_shape, num_classes = shape
        self.layer1 = Dense(int(np.prod(input_shape)), hidden, rngs=rngs)
        self.layer2 = Dense(hidden, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Any input shape: flattened (a no-op for the article's (N, 3072)); integers (data.preprocess=none)
        # become floats for the matmul.
        x = x.reshape(x.shape[0], -1)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        # Named scopes only name the traced ops (TensorBoard's Graphs tab, profiles); the program is the same.
        with jax.named_scope("layer1"):
            activations = jax.nn.relu(self.layer1(x))
        with jax.named_scope("layer2"):
            return self.layer2(activations)


def abstract(hidden: int, shape: Shape = CIFAR10) -> tuple[nnx.GraphDef, nnx.State]:
    """The MLP's static graph and the shapes of its parameters, without computing anything."""
    return nnx.split(nnx.eval_shape(lambda: MLP(hidden, shape=shape, rngs=nnx.Rngs(0))), nnx.Param)


def init_params(hidden: int, key: jax.Array, shape: Shape = CIFAR10) -> nnx.State:
    """Freshly initialised parameters (a pytree); call it under `jax.jit`: eagerly, every random op
    would compile on its own (seconds instead of a fraction of one)."""
    return nnx.state(MLP(hidden, shape=shape, rngs=nnx.Rngs(params=key)), nnx.Param)


def shape_of(pure_params: dict) -> Shape:
    """The (flattened input, classes) a model's parameters (a checkpoint's nested dict) were built for."""
    return (int(pure_params["layer1"]["kernel"].shape[1]),), int(pure_params["layer2"]["kernel"].shape[0])


def with_current_names(pure_params: dict) -> dict:
    """A checkpoint's nested parameter dict with its layers under today's names."""
    return {FORMER_LAYER_NAMES.get(layer, layer): leaves for layer, leaves in pure_params.items()}


def hidden_size(pure_params: dict) -> int:
    """The hidden width of a model from its parameters (a checkpoint's nested dict)."""
    return int(pure_params["layer1"]["kernel"].shape[0])


def weight_matrices(params: nnx.State) -> list[jax.Array]:
    """The two kernels: what the L2 term regularises (biases are not)."""
    return [params["layer1"]["kernel"][...], params["layer2"]["kernel"][...]]


def l2_penalty(params: nnx.State) -> jax.Array:
    """Sum over the weight matrices of sum(w^2)/2 (TF1's `l2_regularizer` without its scale)."""
    return sum(jnp.sum(w * w) for w in weight_matrices(params)) / 2


def hidden_unit_axis(path: tuple) -> int | None:
    """The axis that indexes hidden units in a parameter-shaped leaf at `path` (optimizer states hold
    such leaves too): 0 for layer1.kernel (units, 3072) and layer1.bias, 1 for layer2.kernel (10, units)."""
    keys = [getattr(k, "key", None) for k in path]
    if "layer1" in keys:
        return 0
    if "layer2" in keys and "kernel" in keys:
        return 1
    return None


def resize(tree: Any, width: int) -> Any:
    """A parameter-shaped `tree` as numpy arrays with its hidden units cut or zero-padded to `width`.

    On the host on purpose: slicing on the device would compile a small program per leaf and shape.
    """

    def fix(path, leaf):
        leaf = np.asarray(leaf)
        axis = hidden_unit_axis(path)
        if axis is None or leaf.shape[axis] == width:
            return leaf
        index = [slice(None)] * leaf.ndim
        index[axis] = slice(0, width)
        padding = [(0, 0)] * leaf.ndim
        padding[axis] = (0, max(width - leaf.shape[axis], 0))
        return np.pad(leaf[tuple(index)], padding)

    return jax.tree_util.tree_map_with_path(fix, tree)


def mask_units(tree: Any, unit_mask: jax.Array) -> Any:
    """A parameter-shaped `tree` times `unit_mask` (width,) along the hidden units: padding stays zero."""

    def fix(path, leaf):
        axis = hidden_unit_axis(path)
        if axis is None:
            return leaf
        shape = [1] * leaf.ndim
        shape[axis] = -1
        return leaf * unit_mask.reshape(shape)

    return jax.tree_util.tree_map_with_path(fix, tree)

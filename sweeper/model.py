"""The article's model: 3072 -> hidden (ReLU) -> 10, fully connected, as a Flax NNX module."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

NUM_CLASSES = 10
IMAGE_SIZE = 3072


def dense(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """A layer initialised as the article's: weights from TF1's `truncated_normal_initializer` with
    stddev 1/sqrt(fan_in) (redrawn beyond 2 stddev, no variance correction), biases zero."""
    init = jax.nn.initializers.truncated_normal(stddev=1.0 / fan_in**0.5, lower=-2.0, upper=2.0)
    return nnx.Linear(fan_in, fan_out, kernel_init=init, bias_init=nnx.initializers.zeros, rngs=rngs)


class MLP(nnx.Module):
    """Two fully connected layers; weights truncated-normal with stddev 1/sqrt(fan_in), biases zero."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = dense(IMAGE_SIZE, hidden, rngs)
        self.output = dense(hidden, NUM_CLASSES, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output(jax.nn.relu(self.hidden(x)))


def abstract(hidden: int) -> tuple[nnx.GraphDef, nnx.State]:
    """The MLP's static graph and the shapes of its parameters, without computing anything."""
    return nnx.split(nnx.eval_shape(lambda: MLP(hidden, rngs=nnx.Rngs(0))), nnx.Param)


def init_params(hidden: int, key: jax.Array) -> nnx.State:
    """Freshly initialised parameters (a pytree); call it under `jax.jit`: eagerly, every random op
    would compile on its own (seconds instead of a fraction of one)."""
    return nnx.state(MLP(hidden, rngs=nnx.Rngs(params=key)), nnx.Param)


def weight_matrices(params: nnx.State) -> list[jax.Array]:
    """The two kernels: what the L2 term regularises (biases are not)."""
    return [params["hidden"]["kernel"][...], params["output"]["kernel"][...]]


def l2_penalty(params: nnx.State) -> jax.Array:
    """Sum over the weight matrices of sum(w^2)/2 (TF1's `l2_regularizer` without its scale)."""
    return sum(jnp.sum(w * w) for w in weight_matrices(params)) / 2

"""The article's model: 3072 -> hidden (ReLU) -> 10, fully connected, as a Flax NNX module; on other
data, (its input values, flattened) -> hidden -> (its classes). `conf/model/mlp.yaml` selects it (the
default); its hidden units are paddable (sweeper.task.models), so that a sweep over widths shares one
program."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Dense(nnx.Module):
    """A fully connected layer initialised as the article's, with its kernel stored (out, in).

    Weights come from TF1's `truncated_normal_initializer` with stddev 1/sqrt(fan_in) (redrawn beyond
    2 stddev, no variance correction); biases are zero. The (out, in) layout is for speed: the weight
    gradient is then dh^T @ x, with both operands in their natural layout. On XLA:CPU that made the
    article's scanned training step about 1.3x faster (median 7.4 -> 5.6 ms) than nnx.Linear's
    (in, out) kernel, whose gradient x^T @ dh runs XLA's dot at half speed (benchmarks/RESULTS.md).
    """

    def __init__(self, fan_in: int, fan_out: int, *, rngs: nnx.Rngs, in_key: str = "", out_key: str = ""):
        # in_key/out_key: the model key that sizes the inputs/outputs, where that axis is paddable.
        init = jax.nn.initializers.truncated_normal(stddev=1.0 / fan_in**0.5, lower=-2.0, upper=2.0)
        self.kernel = nnx.Param(
            init(rngs.params(), (fan_out, fan_in)), paddable=(out_key or None, in_key or None)
        )
        self.bias = nnx.Param(jnp.zeros((fan_out,)), paddable=(out_key or None,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...].T + self.bias[...]


# What checkpoints written before the layers took the article's names called them.
FORMER_LAYER_NAMES = {"hidden": "layer1", "output": "layer2"}


class MLP(nnx.Module):
    """Two fully connected layers, `layer1` (3072 -> hidden, ReLU) and `layer2` (hidden -> 10), as the
    article numbers them; weights truncated-normal with stddev 1/sqrt(fan_in), biases zero."""

    def __init__(self, hidden: int, *, input_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs):
        self.layer1 = Dense(int(np.prod(input_shape)), hidden, rngs=rngs, out_key="hidden")
        self.layer2 = Dense(hidden, num_classes, rngs=rngs, in_key="hidden")

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


def upgrade_v1(pure_params: dict) -> dict:
    """The model config of a checkpoint written before checkpoints kept theirs (every one was this MLP),
    its layers renamed to today's names in place."""
    renamed = {FORMER_LAYER_NAMES.get(layer, layer): leaves for layer, leaves in pure_params.items()}
    pure_params.clear()
    pure_params.update(renamed)
    kernel = pure_params["layer1"]["kernel"]
    return {
        "config": {"_target_": f"{__name__}.MLP", "hidden": int(kernel.shape[0])},
        "input_shape": [int(kernel.shape[1])],
        "num_classes": int(pure_params["layer2"]["kernel"].shape[0]),
    }

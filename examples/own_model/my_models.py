"""A small convolutional network for sweeper: your own model is an nnx.Module in your own file.

sweeper builds it as `ConvNet(**model keys, input_shape=..., num_classes=..., rngs=...)`: the keys
come from my_conf/model/convnet.yaml (and the command line: model.channels=32), input_shape and
num_classes from the data (one example's shape, the number of classes), rngs from `seed` (streams
`params`, `dropout` and `default`).
"""

from __future__ import annotations

import jax
from flax import nnx


class ConvNet(nnx.Module):
    """conv 3x3 (channels) -> BatchNorm -> ReLU -> 2x2 max pool -> conv 3x3 (2 * channels) -> BatchNorm
    -> ReLU -> global average pool -> Dropout -> dense (num_classes). Inputs (N, height, width, colours)."""

    def __init__(
        self,
        channels: int,
        dropout: float = 0.2,
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        rngs: nnx.Rngs,
    ):
        colours = input_shape[-1]
        self.conv1 = nnx.Conv(colours, channels, (3, 3), rngs=rngs)
        self.norm1 = nnx.BatchNorm(
            channels, momentum=0.9, rngs=rngs
        )  # running averages settle within a short run
        self.conv2 = nnx.Conv(channels, 2 * channels, (3, 3), rngs=rngs)
        self.norm2 = nnx.BatchNorm(2 * channels, momentum=0.9, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.head = nnx.Linear(2 * channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # Named scopes name the ops in TensorBoard's Graphs tab.
        with jax.named_scope("block1"):
            x = nnx.max_pool(nnx.relu(self.norm1(self.conv1(x))), (2, 2), strides=(2, 2))
        with jax.named_scope("block2"):
            x = nnx.relu(self.norm2(self.conv2(x))).mean(axis=(1, 2))
        with jax.named_scope("head"):
            return self.head(self.dropout(x))

"""Where a stacked program lives: one device, or its member axis split over several local devices.

With several devices, the members' state, lr and reg are sharded along the member axis (a 1-D
`jax.sharding.Mesh`), and the dataset is replicated on every device; XLA partitions the vmapped
segment so that each device trains its own members. The member axis is padded to a multiple of the
device count with copies of the last member, whose results are dropped.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sweeper.config import ConfigError

AXIS = "members"


def local_devices(count: int | None) -> list[jax.Device]:
    """The first `count` local devices (None: all); ConfigError naming `hydra.launcher.devices` when
    the machine has fewer."""
    available = jax.local_devices()
    if count is None:
        return available
    if not 1 <= count <= len(available):
        raise ConfigError(
            f"hydra.launcher.devices must be at most {len(available)}, the local "
            f"{available[0].platform} devices here, got {count}"
        )
    return available[:count]


class Placement:
    """How a stacked program's arrays are laid out over `devices` (sweeper.train.program uses one only where
    it `spread`s over several; on one device a program keeps its plain layout)."""

    def __init__(self, devices: list[jax.Device]):
        self.devices = list(devices)
        self.count = len(self.devices)
        mesh = Mesh(np.asarray(self.devices), (AXIS,))
        self._sharded = NamedSharding(mesh, PartitionSpec(AXIS))
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._copies: dict[int, tuple[Any, Any]] = {}

    @property
    def spread(self) -> bool:
        return self.count > 1

    def rows(self, members: int) -> int:
        """The member axis' length for `members`: the next multiple of the device count."""
        return -(-members // self.count) * self.count

    def pad_index(self, rows: list[int] | np.ndarray) -> np.ndarray:
        """`rows` followed by copies of its last row, up to `self.rows(len(rows))`."""
        rows = list(rows)
        return np.asarray(rows + rows[-1:] * (self.rows(len(rows)) - len(rows)))

    def pad(self, tree: Any, axis: int = 0) -> Any:
        """`tree` with its member axis (`axis`) padded by copies of its last member."""

        def fix(leaf):
            n = np.shape(leaf)[axis]
            return np.take(leaf, self.pad_index(range(n)), axis=axis) if self.rows(n) != n else leaf

        return jax.tree.map(fix, tree)

    def place(self, tree: Any) -> Any:
        """`tree` (leading member axis, padded) split over the devices."""
        return jax.device_put(tree, self._sharded)

    def replicate(self, tree: Any) -> Any:
        """`tree` on every device (once per tree: a program's dataset is shared by its programs)."""
        key = id(tree)
        if key not in self._copies or self._copies[key][0] is not tree:
            self._copies[key] = (tree, jax.device_put(tree, self._replicated))
        return self._copies[key][1]

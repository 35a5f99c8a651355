"""How a program (sweeper.train.program) lays its members out on the device: one run's plain state
(`OneRun`), or K members stacked on a leading member axis (`Stacked`), on one device (`OneDevice`) or
split over several (sweeper.train.devices.Placement).

A layout owns what differs between them: putting the members' states and hyperparameters on the device, taking
rows, padding the member axis and dropping the padding's results, and reading one member back. The
program holds one and does the rest the same way for every layout.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweeper.task import train_step
from sweeper.train.devices import Placement


def host_stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, on the host."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, copied to the device in one go."""
    return jax.device_put(host_stack(trees))


def take(tree: Any, rows: np.ndarray) -> Any:
    """`tree` at `rows` of its member axis."""
    return jax.tree.map(lambda leaf: leaf[rows], tree)


def member_row(tree: Any, index: int) -> Any:
    """The member at `index` of a stacked host tree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


class OneDevice:
    """Where a stacked program on one device lives: Placement's interface with nothing to pad, split or
    copy, so that a stacked layout treats one device and several alike."""

    count, spread = 1, False

    def rows(self, members: int) -> int:
        return members

    def pad_index(self, rows: list[int] | np.ndarray) -> np.ndarray:
        return np.asarray(rows)

    def pad(self, tree: Any, axis: int = 0) -> Any:
        return tree

    def place(self, tree: Any) -> Any:
        """`tree` on the default device."""
        return jax.device_put(tree)

    def replicate(self, tree: Any) -> Any:
        return tree


class OneRun:
    """One run's plain state: no member axis, its lr and reg scalars (a program of exactly one member)."""

    stacked = False
    placement = None

    def share(self, splits: train_step.DeviceSplits) -> train_step.DeviceSplits:
        return splits

    def state(self, states: list[Any], step: int) -> train_step.TrainState:
        """The one host (params, opt_state) in `states` on the device at `step`."""
        params, opt_state = jax.device_put(states[0])
        return train_step.TrainState(params, opt_state, jnp.bool_(True), np.int32(step))

    def hyper(self, lr: np.ndarray, reg: np.ndarray, optimizer: dict, unit_mask: Any) -> train_step.Hyper:
        """Its lr, reg and optimizer values (one each) as scalars; nothing is masked."""
        values = {k: jnp.float32(v[0]) for k, v in optimizer.items()}
        return train_step.Hyper(jnp.float32(lr[0]), jnp.float32(reg[0]), values, None)

    # Keeping, or measuring, fewer rows of one member leaves none: there is nothing to take.
    def take(self, tree: Any, rows: list[int]) -> Any:
        return tree

    def take_measured(self, params: Any, rows: list[int]) -> Any:
        return params

    def settle(self, tree: Any) -> Any:
        return tree

    def pad(self, tree: Any, axis: int = 0) -> Any:
        return tree

    def results(self, values: np.ndarray, members: int) -> np.ndarray:
        """A segment's (steps,) values as (steps, 1)."""
        return values[:, None]

    def member_state(self, host: Any, index: int) -> Any:
        """The run's host (model state, opt_state), as it is."""
        return host


class Stacked:
    """Members stacked on a leading member axis, placed by `devices`: over several devices (a
    Placement that spreads) or on one (OneDevice)."""

    stacked = True

    def __init__(self, devices: Placement | OneDevice):
        self.devices = devices

    @property
    def placement(self) -> Placement | None:
        """The placement over several devices, None on one."""
        return self.devices if self.devices.spread else None

    def share(self, splits: train_step.DeviceSplits) -> train_step.DeviceSplits:
        """The dataset on every device the members are on."""
        return self.devices.replicate(splits)

    def state(self, states: list[Any], step: int) -> train_step.TrainState:
        """Host (params, opt_state) trees of one width stacked and placed at `step`."""
        params, opt_state = self.devices.place(self.devices.pad(host_stack(states)))
        alive = self.devices.place(np.ones(self.devices.rows(len(states)), bool))
        return train_step.TrainState(params, opt_state, alive, np.int32(step))

    def hyper(self, lr: np.ndarray, reg: np.ndarray, optimizer: dict, unit_mask: Any) -> train_step.Hyper:
        """The members' lr, reg, optimizer values and unit masks (None: nothing masked) a column each,
        placed; a placed mask comes back padded, so only its members' rows are taken."""
        if unit_mask is not None:
            unit_mask = {k: np.asarray(m)[: len(lr)] for k, m in unit_mask.items()}
        return self.devices.place(self.devices.pad(train_step.Hyper(lr, reg, optimizer, unit_mask)))

    def take(self, tree: Any, rows: list[int]) -> Any:
        """The state `tree` at `rows`, padded for the devices."""
        return take(tree, self.devices.pad_index(rows))

    def take_measured(self, params: Any, rows: list[int]) -> Any:
        """`params` at `rows` to measure them (unpadded: the counts are cut to `rows`)."""
        return take(params, np.asarray(rows))

    def settle(self, tree: Any) -> Any:
        """A changed state tree placed again: a gather may leave its result laid out another way."""
        return self.devices.place(tree)

    def pad(self, tree: Any, axis: int = 0) -> Any:
        """`tree`'s member axis (`axis`) padded for the devices."""
        return self.devices.pad(tree, axis)

    def results(self, values: np.ndarray, members: int) -> np.ndarray:
        """A segment's (steps, rows) values without the padding rows'."""
        return values[:, :members]

    def member_state(self, host: Any, index: int) -> Any:
        """The host (model state, opt_state) of the member at `index`, at the program's widths."""
        return member_row(host, index)


def layout(stacked: bool, placement: Placement | None) -> OneRun | Stacked:
    """The layout of a program: one run's, or stacked members' over `placement`'s devices where it
    spreads over several, else on one."""
    if not stacked:
        return OneRun()
    return Stacked(placement if placement is not None and placement.spread else OneDevice())

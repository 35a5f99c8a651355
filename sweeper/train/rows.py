"""The members of a program (sweeper.train.program) and their state on the device: a row each on the
member axis (or the one run's plain state), laid out by a layout (sweeper.train.layouts). `MemberRows`
keeps the members, their state and their lr, reg and optimizer values in step as members join, end, copy
one another or change their hyperparameters, and reads their states back."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweeper.task import models, train_step
from sweeper.train.devices import Placement
from sweeper.train.history import History
from sweeper.train.layouts import OneRun, Stacked
from sweeper.train.member import Member


@jax.jit
def _copy_rows(tree: Any, dst: jax.Array, src: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf.at[dst].set(leaf[src]), tree)


class MemberRows:
    """`members` at program step `step`, their paddable axes (`padding`) padded to `widths` ({model key:
    size}), on `splits` (a dataset on the device) as `layout` places them. Their state is set by
    `_take_initial`: the program does it once it has compiled its segment."""

    def __init__(
        self,
        members: list[Member],
        splits: train_step.DeviceSplits,
        layout: OneRun | Stacked,
        step: int,
        widths: dict[str, int],
    ):
        self.layout = layout
        self.members, self.splits = list(members), layout.share(splits)
        self.step, self.widths = step, dict(widths)
        self.padding: models.Padding  # set with the program's model
        self.state: train_step.TrainState
        self.hyper: train_step.Hyper

    @property
    def stacked(self) -> bool:
        """Whether the members are stacked on a member axis (else the program is one run's)."""
        return self.layout.stacked

    @property
    def placement(self) -> Placement | None:
        """The placement its member axis is split over, None unless over several devices."""
        return self.layout.placement

    def _take_initial(self, members: list[Member], states: Iterable[Any] = ()) -> None:
        """The state on the device: the host `states` of the rows so far, then those of `members`
        joining at the program's step (the program owns them now)."""
        states = list(states)
        for m in members:
            m.offset = self.step - m.start
            states.append(self.padding.resize(m.initial, self.widths))
            m.initial = None
        self.state = self.layout.state(states, self.step)
        self.hyper = self._hyper(self._unit_mask())

    @property
    def padded(self) -> bool:
        """Whether a member is narrower than the program: its extra units are zero and masked."""
        return any(m.widths[k] < width for m in self.members for k, width in self.widths.items())

    def _unit_mask(self) -> dict[str, np.ndarray] | None:
        """Each member's own units among the program's widths, per paddable key, where any member is
        narrower (else None)."""
        if not self.padded:
            return None
        return {
            key: np.stack([np.arange(width) < m.widths[key] for m in self.members]).astype(np.float32)
            for key, width in self.widths.items()
        }

    def member_step(self, row: int) -> int:
        """The own step of the member at `row`: where it is in its run."""
        return self.step - self.members[row].offset

    def _hyper(self, unit_mask: Any) -> train_step.Hyper:
        """The members' lr, reg and optimizer values (and `unit_mask`) as the segment takes them."""
        lr, reg = (np.float32([getattr(m, key) for m in self.members]) for key in ("lr", "reg"))
        names = [k for k, _ in self.members[0].values.optimizer]
        optimizer = {k: np.float32([dict(m.values.optimizer)[k] for m in self.members]) for k in names}
        return self.layout.hyper(lr, reg, optimizer, unit_mask)

    def __len__(self) -> int:
        return len(self.members)

    def training_rows(self) -> list[int]:
        """The rows of the members still training (the others ended at this step)."""
        return [j for j, m in enumerate(self.members) if m.status is None]

    def keep(self, rows: list[int]) -> None:
        """Go on with the members at `rows` only (the others ended)."""
        if self._every(rows):
            return
        self.members = [self.members[r] for r in rows]
        if self.members:
            mask = self.hyper.unit_mask
            self._map_state(lambda tree: self.layout.take(tree, rows))
            kept = None if mask is None else {k: np.asarray(m)[np.asarray(rows)] for k, m in mask.items()}
            self.hyper = self._hyper(kept)

    def follow_histories(self) -> None:
        """Members whose history changes their values at this step train on with the new ones."""
        changed = False
        for row, member in enumerate(self.members):
            now = member.hyperparameters_at(self.member_step(row))
            changed |= now != member.values
            member.values = now
        if changed:
            self._set_hyperparameters()

    def copy_members(self, targets: list[int], sources: list[int], histories: list[History]) -> None:
        """Members `targets` take the parameters, optimizer state and last losses of members `sources`,
        and train on as their new `histories` say (population-based training; stacked only)."""
        for target, source, history in zip(targets, sources, histories, strict=True):
            dst, src = self.members[target], self.members[source]
            dst.history, dst.last_losses, dst.measured_at = history, src.last_losses, {}
            dst.values = dst.hyperparameters_at(self.member_step(target))
        self._map_state(lambda tree: _copy_rows(tree, jnp.asarray(targets), jnp.asarray(sources)))
        self._set_hyperparameters()

    def _map_state(self, change: Callable[[Any], Any]) -> None:
        """Apply `change` to the members' (params, opt_state, alive); the step stays."""
        changed = change((self.state.params, self.state.opt_state, self.state.alive))
        params, opt_state, alive = self.layout.settle(changed)
        self.state = self.state._replace(params=params, opt_state=opt_state, alive=alive)

    def _set_hyperparameters(self) -> None:
        self.hyper = self._hyper(self.hyper.unit_mask)

    def member_states(self, rows: Iterable[int]) -> Iterator[tuple[int, tuple[Any, Any]]]:
        """(row, (model state, opt_state)) of each member at `rows`, on the host at its own widths: one
        transfer for all of them."""
        host = jax.device_get((self.state.params, self.state.opt_state))
        for row in rows:
            state, widths = self.layout.member_state(host, row), self.members[row].widths
            yield row, (state if widths == self.widths else self.padding.resize(state, widths))

    def _every(self, rows: list[int] | None) -> bool:
        """Whether `rows` are all members in order: a gather would only copy the state."""
        return rows is None or list(rows) == list(range(len(self.members)))

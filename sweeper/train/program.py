"""Runs on the device: a `Member` is one run, a `Program` trains one or many of them as one compiled scan.

A program holds a single run's plain state (`stacked=False`) or the states of a group stacked on a
leading member axis (`stacked=True`, `jax.vmap` around the same step). Narrower members of a stacked
group are zero-padded to the widest and their padding is masked out of every update. The engine
(sweeper.train.engine) drives both kinds the same way: train to a step, measure, read members out, drop the
members that ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweeper.record import checkpoint
from sweeper.record.run import RunRecord
from sweeper.status import Status
from sweeper.task import data, model, train_step
from sweeper.train.devices import Placement
from sweeper.train.history import History


@dataclass(eq=False)
class Member:
    """One run in a program: its config, record and data order, where it starts, and what the program
    keeps of it between segments. Only Program's methods change it (and its record, how it ended)."""

    cfg: Any
    record: RunRecord
    order: data.BatchOrder
    start: int  # the step it starts (or resumes) at
    initial: tuple[Any, Any] | None  # (params, opt_state) at `start`, until a program takes them
    history: History
    last_losses: np.ndarray | None = None  # the losses of its last segment
    val_step: int | None = None  # the program step `val_accuracy` was measured at
    val_accuracy: float | None = None
    # The program's step minus this member's own step: 0 when every member of a program started
    # together, else the program step it joined at minus the step it started at (a slot pool).
    offset: int = 0
    lr: float = field(init=False)  # what it trains with now: its history's at the program's step
    reg: float = field(init=False)

    def __post_init__(self) -> None:
        self.lr, self.reg = self.hyperparameters_at(self.start)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def status(self) -> Status | None:
        """How it ended (sweeper.record.run), None while it trains."""
        return self.record.status

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.record.metrics

    def hyperparameters_at(self, step: int) -> tuple[float, float]:
        """(lr, reg) it trains with from `step` on, as its history says (else its config)."""
        return self.history.hyperparameters_at(step, (float(self.cfg.lr), float(self.cfg.reg)))


def new_member(
    cfg: Any, record: RunRecord, num_train: int, upto: int | None = None, *, population: bool = False
) -> Member:
    """A run as its config says: initialised from `cfg.seed`, or resumed from its latest checkpoint (not
    past step `upto`). A `population` member (sweeper.train.controllers.PopulationBasedTraining) records its
    lr, reg and copies from step 0 on."""
    params, order_seed = train_step.init_run(cfg.hidden, cfg.seed)
    opt_state = train_step.optimizer_factory(cfg.optimizer)(cfg.lr).init(params)
    order = data.BatchOrder(order_seed, num_train, cfg.batch_size)
    start, saved = 0, {}
    if cfg.resume:
        params, opt_state, start, saved = checkpoint.restore_latest(
            record.workdir / "checkpoints", params, opt_state, order.state(0), record.log, upto
        )
    if saved.get("history"):
        history = History.of_record(saved["history"])
    else:
        history = History.of_config(cfg, population=population)
    record.attempts = list(saved.get("attempts", []))
    member = Member(
        cfg, record, order, start, (params, opt_state), history, last_losses=saved.get("last_losses")
    )
    return member


class CompiledSegments:
    """A jitted segment compiled ahead of time, once per set of argument shapes (segment length, group
    size), and timed: compile time apart from training time, and when the first step ended."""

    def __init__(self, jitted: Any):
        self.jitted, self.programs = jitted, {}
        self.compile_s = self.train_s = 0.0
        self.first_step_done: float | None = None  # time.perf_counter() at the end of the first step

    def recompile(self, jitted: Any) -> None:
        """Go on with another jitted segment (a program that widened), its timings kept."""
        self.jitted, self.programs = jitted, {}

    def __call__(self, *args: Any, steps: int) -> tuple[Any, Any]:
        """Run one segment of `steps` steps and wait for it: (state, outputs as numpy)."""
        started, compile_before = time.perf_counter(), self.compile_s
        # Compiled per shapes and layout: a program over several devices takes its arrays split over them.
        shapes = tuple((np.shape(leaf), getattr(leaf, "sharding", None)) for leaf in jax.tree.leaves(args))
        if shapes not in self.programs:
            self.programs[shapes] = self.jitted.lower(*args).compile()
            self.compile_s += time.perf_counter() - started
        state, outputs = self.programs[shapes](*args)
        outputs = jax.device_get(outputs)  # waits for the segment to finish
        segment_s = time.perf_counter() - started - (self.compile_s - compile_before)
        self.train_s += segment_s
        if self.first_step_done is None:  # start-up ends with the first step, not the whole segment
            self.first_step_done = time.perf_counter() - segment_s * (steps - 1) / steps
        return state, outputs


def batches(members: list[Member], start: int, stop: int) -> np.ndarray:
    """Image indices for program steps start..stop-1, each member at its own steps: (steps, batch)
    shared by all members when they share a data order (one seed) and their steps, else (steps,
    members, batch)."""
    first = members[0]
    if all(m.order.seed_words == first.order.seed_words and m.offset == first.offset for m in members):
        return first.order.indices(start - first.offset, stop - first.offset)
    return np.stack([m.order.indices(start - m.offset, stop - m.offset) for m in members], axis=1)


def _host_stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, on the host."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, copied to the device in one go."""
    return jax.device_put(_host_stack(trees))


def _take(tree: Any, rows: np.ndarray) -> Any:
    return jax.tree.map(lambda leaf: leaf[rows], tree)


@jax.jit
def _copy_rows(tree: Any, dst: jax.Array, src: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf.at[dst].set(leaf[src]), tree)


def _device_state(
    states: list[Any], step: int, stacked: bool, placement: Placement | None
) -> train_step.TrainState:
    """Host (params, opt_state) trees of one width on the device at `step`: stacked on a member axis
    (split over `placement`'s devices, if any), or one run's plain state."""
    if placement is not None:
        params, opt_state = placement.place(placement.pad(_host_stack(states)))
        alive = placement.place(np.ones(placement.rows(len(states)), bool))
    elif stacked:
        params, opt_state = _stack(states)
        alive = jnp.ones(len(states), bool)
    else:
        params, opt_state = jax.device_put(states[0])
        alive = jnp.bool_(True)
    return train_step.TrainState(params, opt_state, alive, np.int32(step))


class Program:
    """`members` trained together on `splits` (a dataset on the device); stacked, with a `placement`
    over several devices, the member axis is split over them (sweeper.train.devices).

    Members start together at their common step, or, with `step` given (a slot pool), each at its own:
    the program counts its own steps from `step` and a member's offset turns them into the member's.
    `width`: the units every member is padded to (default: the widest member's); `slots`: the rows
    the program is sized for, which occupancy counts (default: its members); `pool`: its number as a
    slot pool (sweeper.train.engine refills it)."""

    def __init__(
        self,
        members: list[Member],
        splits: train_step.DeviceSplits,
        *,
        stacked: bool,
        placement: Placement | None = None,
        step: int | None = None,
        width: int | None = None,
        slots: int | None = None,
        pool: int | None = None,
    ):
        if not stacked and len(members) != 1:
            raise ValueError("an unstacked program trains exactly one member")
        self.placement = placement if stacked and placement is not None and placement.spread else None
        if self.placement is not None:
            splits = self.placement.replicate(splits)
        self.members, self.splits, self.stacked = list(members), splits, stacked
        self.initial_size = len(members)
        self.slots = slots or len(members)
        self.pool = pool  # the slot pool's number within its sweep, None for a program of fixed members
        self.step = members[0].start if step is None else step
        self.width = width or max(m.cfg.hidden for m in members)
        self.segments = CompiledSegments(self._segment())
        self.member_steps = self.slot_steps = 0  # trained by members, and the slots' capacity
        for m in members:
            m.offset = self.step - m.start
        states = [model.resize(m.initial, self.width) for m in members]
        self.state = _device_state(states, self.step, stacked, self.placement)
        for m in members:
            m.initial = None  # the program owns the state now
        self.hyper = self._hyper(self._unit_mask())

    def _segment(self) -> Any:
        """The jitted segment for the program's width (and its graphdef, set here)."""
        self.graphdef, _ = model.abstract(self.width)
        make_optimizer = train_step.optimizer_factory(self.members[0].cfg.optimizer)
        return train_step.make_segment(self.graphdef, make_optimizer, self.stacked)

    @property
    def padded(self) -> bool:
        """Whether a member is narrower than the program: its extra units are zero and masked."""
        return any(m.cfg.hidden < self.width for m in self.members)

    def _unit_mask(self) -> np.ndarray | None:
        """Each member's own units among the program's width, where any member is narrower (else None)."""
        if not self.padded:
            return None
        return np.stack([np.arange(self.width) < m.cfg.hidden for m in self.members]).astype(np.float32)

    def member_step(self, row: int) -> int:
        """The own step of the member at `row`: where it is in its run."""
        return self.step - self.members[row].offset

    def add(self, members: list[Member]) -> None:
        """Members join the program at its current step, each from its own start (a slot pool: they
        take the rows of members that ended); stacked programs only. A wider member widens the
        program: every member is padded to it, as narrower members always are."""
        if not members:
            return
        host = jax.device_get((self.state.params, self.state.opt_state))
        states = [jax.tree.map(lambda leaf, r=row: leaf[r], host) for row in range(len(self.members))]
        if (wider := max(m.cfg.hidden for m in members)) > self.width:  # padded to the new widest
            states = [model.resize(state, wider) for state in states]
            self.width = wider
            self.segments.recompile(self._segment())
        for m in members:
            m.offset = self.step - m.start
            states.append(model.resize(m.initial, self.width))
            m.initial = None
        self.members += members
        self.state = _device_state(states, self.step, self.stacked, self.placement)
        self.hyper = self._hyper(self._unit_mask())

    def _hyper(self, unit_mask: Any) -> train_step.Hyper:
        """The members' lr and reg as the segment takes them: a column each, or scalars unstacked."""
        lr, reg = (np.float32([getattr(m, key) for m in self.members]) for key in ("lr", "reg"))
        if not self.stacked:
            return train_step.Hyper(jnp.float32(lr[0]), jnp.float32(reg[0]), None)
        if self.placement is not None:
            unit_mask = None if unit_mask is None else np.asarray(unit_mask)[: len(self.members)]
            return self.placement.place(self.placement.pad(train_step.Hyper(lr, reg, unit_mask)))
        return train_step.Hyper(jnp.asarray(lr), jnp.asarray(reg), unit_mask)

    def __len__(self) -> int:
        return len(self.members)

    def training_rows(self) -> list[int]:
        """The rows of the members still training (the others ended at this step)."""
        return [j for j, m in enumerate(self.members) if m.status is None]

    # --- training -----------------------------------------------------------------------------------

    def train(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Train every member to step `stop`: (losses, batch accuracies), each (steps, members)."""
        batch_indices = batches(self.members, self.step, stop)
        if self.placement is not None and batch_indices.ndim == 3:
            batch_indices = self.placement.pad(batch_indices, axis=1)
        self.state, (losses, accuracies) = self.segments(
            self.state, self.hyper, self.splits.train, batch_indices, steps=stop - self.step
        )
        self.member_steps += len(self.members) * (stop - self.step)
        self.slot_steps += max(self.slots, len(self.members)) * (stop - self.step)
        self.step = stop
        if self.placement is not None:  # the padding rows' results go
            losses, accuracies = losses[:, : len(self.members)], accuracies[:, : len(self.members)]
        if not self.stacked:
            losses, accuracies = losses[:, None], accuracies[:, None]
        for j, member in enumerate(self.members):
            member.last_losses = losses[:, j]
        return losses, accuracies

    def keep(self, rows: list[int]) -> None:
        """Go on with the members at `rows` only (the others ended)."""
        if self._every(rows):
            return
        self.members = [self.members[r] for r in rows]
        if self.placement is not None and self.members:
            mask = self.hyper.unit_mask
            self._map_state(lambda tree: _take(tree, self.placement.pad_index(rows)))
            self.hyper = self._hyper(None if mask is None else np.asarray(mask)[np.asarray(rows)])
        elif self.stacked and self.members:
            index = np.asarray(rows)
            self._map_state(lambda tree: _take(tree, index))
            self.hyper = _take(self.hyper, index)

    def follow_histories(self) -> None:
        """Members whose history changes lr or reg at this step train on with the new values."""
        changed = False
        for row, member in enumerate(self.members):
            now = member.hyperparameters_at(self.member_step(row))
            changed |= now != (member.lr, member.reg)
            member.lr, member.reg = now
        if changed:
            self._set_hyperparameters()

    def copy_members(self, targets: list[int], sources: list[int], histories: list[History]) -> None:
        """Members `targets` take the parameters, optimizer state and last losses of members `sources`,
        and train on as their new `histories` say (population-based training; stacked only)."""
        for target, source, history in zip(targets, sources, histories, strict=True):
            dst, src = self.members[target], self.members[source]
            dst.history, dst.last_losses, dst.val_step = history, src.last_losses, None
            dst.lr, dst.reg = dst.hyperparameters_at(self.member_step(target))
        self._map_state(lambda tree: _copy_rows(tree, jnp.asarray(targets), jnp.asarray(sources)))
        self._set_hyperparameters()

    def _map_state(self, change: Callable[[Any], Any]) -> None:
        """Apply `change` to the members' (params, opt_state, alive); the step stays."""
        params, opt_state, alive = change((self.state.params, self.state.opt_state, self.state.alive))
        if self.placement is not None:  # a gather may leave its result laid out another way
            params, opt_state, alive = self.placement.place((params, opt_state, alive))
        self.state = self.state._replace(params=params, opt_state=opt_state, alive=alive)

    def _set_hyperparameters(self) -> None:
        self.hyper = self._hyper(self.hyper.unit_mask)

    # --- measuring ----------------------------------------------------------------------------------

    def accuracies(self, split: tuple[jax.Array, jax.Array], rows: list[int] | None = None) -> np.ndarray:
        """(members,) fraction of `split` (images, labels) each member (or each of `rows`) gets right."""
        images, labels = split
        params = self.state.params
        if self.stacked and not self._every(rows):
            params = _take(params, np.asarray(rows))
        counts = train_step.members_correct(
            self.graphdef, params, images, labels, self.splits.train.mean_image, stacked=self.stacked
        )
        return np.asarray(counts)[: len(self.members) if rows is None else len(rows)] / len(labels)

    def val_accuracies(self) -> np.ndarray | None:
        """(members,) validation accuracy at the current step, measured once per step; None without a
        validation split. Each member keeps its value (a rung and the next log point share it)."""
        if len(self.splits.val[1]) == 0:
            return None
        if any(m.val_step != self.step for m in self.members):
            for m, value in zip(self.members, self.accuracies(self.splits.val), strict=True):
                m.val_step, m.val_accuracy = self.step, float(value)
        return np.asarray([m.val_accuracy for m in self.members])

    def final_accuracies(self, rows: list[int]) -> list[tuple[float, float | None, float]]:
        """(train, val, test) accuracy of each member at `rows`; val None without a validation split."""
        train = self.accuracies((self.splits.train.images, self.splits.train.labels), rows)
        val = self.val_accuracies()
        val = [None] * len(rows) if val is None else val[rows]
        test = self.accuracies(self.splits.test, rows)
        return [
            tuple(None if a is None else float(a) for a in accs)
            for accs in zip(train, val, test, strict=True)
        ]

    def histogram_tensors(self) -> list[dict[str, np.ndarray]]:
        """Each member's logits on its next batch and its weights, by TensorBoard tag."""
        batch_indices = np.stack(
            [m.order.indices(self.step - m.offset, self.step - m.offset + 1)[0] for m in self.members]
        )
        if self.placement is not None:
            batch_indices = self.placement.pad(batch_indices)
        train = self.splits.train
        logits = train_step.members_logits(
            self.graphdef,
            self.state.params,
            train.images,
            batch_indices,
            train.mean_image,
            stacked=self.stacked,
        )
        return [
            {"logits": logits[j], **train_step.weight_tensors(params)}
            for j, (params, _) in self.member_states(range(len(self.members)))
        ]

    def member_states(self, rows: Iterable[int]) -> Iterator[tuple[int, tuple[Any, Any]]]:
        """(row, (params, opt_state)) of each member at `rows`, on the host at its own width: one
        transfer for all of them."""
        host = jax.device_get((self.state.params, self.state.opt_state))
        for row in rows:
            if not self.stacked:
                yield row, host
            else:
                tree = jax.tree.map(lambda leaf, r=row: leaf[r], host)
                yield row, model.resize(tree, self.members[row].cfg.hidden)

    def _every(self, rows: list[int] | None) -> bool:
        """Whether `rows` are all members in order: a gather would only copy the state."""
        return rows is None or list(rows) == list(range(len(self.members)))

"""Runs on the device: a `Member` is one run, a `Program` trains one or many of them as one compiled scan.

A program holds a single run's plain state (`stacked=False`) or the states of a group stacked on a
leading member axis (`stacked=True`, `jax.vmap` around the same step). Narrower members of a stacked
group are zero-padded to the widest and their padding is masked out of every update. The engine
(sweeper.engine) drives both kinds the same way: train to a step, measure, read members out, drop the
members that ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sweeper import checkpoint, data, model, step
from sweeper.record import RunRecord
from sweeper.status import Status


@dataclass(eq=False)
class Member:
    """One run: its config and record, its data order, its hyperparameters now, and how it ended."""

    cfg: Any
    record: RunRecord
    order: data.BatchOrder
    start: int  # the step it starts (or resumes) at
    initial: tuple[Any, Any] | None  # (params, opt_state) at `start`, until a program takes them
    lr: float
    reg: float
    val_step: int | None = None  # the step `val_accuracy` was measured at
    val_accuracy: float | None = None
    last_losses: np.ndarray | None = None  # the losses of its last segment
    status: Status | None = None  # set when it ends
    metrics: dict[str, Any] | None = None
    # Plain records kept in its checkpoints and metrics.json: `schedule` (its lr/reg from each step on,
    # when they change during training) and `lineage` (population-based training's copies).
    history: dict[str, list] = field(default_factory=dict)
    attempts: list[dict] = field(default_factory=list)  # earlier attempts' cost, from its checkpoint
    trial: Any = None  # its Optuna trial, when a pruning study gave it one (sweeper.pruning)

    @property
    def name(self) -> str:
        return self.record.name

    def hyperparameters_at(self, step: int) -> tuple[float, float]:
        """(lr, reg) it trains with from `step` on, as its schedule says (else its config)."""
        lr, reg = float(self.cfg.lr), float(self.cfg.reg)
        for change in self.history.get("schedule", []):
            if change["step"] <= step:
                lr, reg = float(change["lr"]), float(change["reg"])
        return lr, reg


def new_member(cfg: Any, record: RunRecord, num_train: int, upto: int | None = None) -> Member:
    """A run as its config says: initialised from `cfg.seed`, or resumed from its latest checkpoint (not
    past step `upto`)."""
    params, order_seed = step.init_run(cfg.hidden, cfg.seed)
    opt_state = step.optimizer_factory(cfg.optimizer)(cfg.lr).init(params)
    order = data.BatchOrder(order_seed, num_train, cfg.batch_size)
    history: dict[str, list] = {}
    if cfg.schedule:
        history["schedule"] = [{"step": 0, "lr": float(cfg.lr), "reg": float(cfg.reg)}] + [
            {"step": int(c.step), "lr": float(c.lr), "reg": float(c.reg)} for c in cfg.schedule
        ]
    start, saved = 0, {}
    if cfg.resume:
        params, opt_state, start, saved = checkpoint.restore_latest(
            record.workdir / "checkpoints", params, opt_state, order.state(0), record.log, upto
        )
        history = saved.get("history") or history
    member = Member(
        cfg,
        record,
        order,
        start,
        (params, opt_state),
        float(cfg.lr),
        float(cfg.reg),
        last_losses=saved.get("last_losses"),
        history=history,
        attempts=list(saved.get("attempts", [])),
    )
    member.lr, member.reg = member.hyperparameters_at(start)  # where its schedule has it
    return member


class CompiledSegments:
    """A jitted segment compiled ahead of time, once per set of argument shapes (segment length, group
    size), and timed: compile time apart from training time, and when the first step ended."""

    def __init__(self, jitted: Any):
        self.jitted, self.programs = jitted, {}
        self.compile_s = self.train_s = 0.0
        self.first_step_done: float | None = None  # time.perf_counter() at the end of the first step

    def __call__(self, *args: Any, steps: int) -> tuple[Any, Any]:
        """Run one segment of `steps` steps and wait for it: (state, outputs as numpy)."""
        started, compile_before = time.perf_counter(), self.compile_s
        shapes = tuple(np.shape(leaf) for leaf in jax.tree.leaves(args))
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


def _stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, copied to the device in one go."""
    return jax.device_put(jax.tree.map(lambda *leaves: np.stack(leaves), *trees))


def _take(tree: Any, rows: np.ndarray) -> Any:
    return jax.tree.map(lambda leaf: leaf[rows], tree)


@jax.jit
def _copy_rows(tree: Any, dst: jax.Array, src: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf.at[dst].set(leaf[src]), tree)


class Program:
    """`members` trained together from a common step on `splits` (a dataset on the device)."""

    def __init__(self, members: list[Member], splits: step.DeviceSplits, *, stacked: bool):
        if not stacked and len(members) != 1:
            raise ValueError("an unstacked program trains exactly one member")
        self.members, self.splits, self.stacked = list(members), splits, stacked
        self.initial_size = len(members)
        self.step = members[0].start
        self.width = max(m.cfg.hidden for m in members)
        self.padded = any(m.cfg.hidden < self.width for m in members)
        self.graphdef, _ = model.abstract(self.width)
        make_optimizer = step.optimizer_factory(members[0].cfg.optimizer)
        self.segments = CompiledSegments(step.make_segment(self.graphdef, make_optimizer, stacked))
        states = [model.resize(m.initial, self.width) for m in members]
        for m in members:
            m.initial = None  # the program owns the state now
        if stacked:
            params, opt_state = _stack(states)
            alive = jnp.ones(len(members), bool)
            mask = np.stack([np.arange(self.width) < m.cfg.hidden for m in members]).astype(np.float32)
            self.hyper = step.Hyper(self._column("lr"), self._column("reg"), mask if self.padded else None)
        else:
            params, opt_state = jax.device_put(states[0])
            alive = jnp.bool_(True)
            self.hyper = step.Hyper(jnp.float32(members[0].lr), jnp.float32(members[0].reg), None)
        self.state = step.TrainState(params, opt_state, alive, np.int32(self.step))

    def _column(self, name: str) -> jax.Array:
        return jnp.asarray([getattr(m, name) for m in self.members], jnp.float32)

    def __len__(self) -> int:
        return len(self.members)

    def batches(self, start: int, stop: int) -> np.ndarray:
        """Image indices for steps start..stop-1: (steps, batch) shared by all members when they share a
        data order (one seed), else (steps, members, batch)."""
        first = self.members[0].order
        if all(m.order.seed_words == first.seed_words for m in self.members):
            return first.indices(start, stop)
        return np.stack([m.order.indices(start, stop) for m in self.members], axis=1)

    def train(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Train every member to step `stop`: (losses, batch accuracies), each (steps, members)."""
        batch_indices = self.batches(self.step, stop)
        self.state, (losses, accuracies) = self.segments(
            self.state, self.hyper, self.splits.train, batch_indices, steps=stop - self.step
        )
        self.step = stop
        if not self.stacked:
            losses, accuracies = losses[:, None], accuracies[:, None]
        return losses, accuracies

    def accuracies(self, split: tuple[jax.Array, jax.Array], rows: list[int] | None = None) -> np.ndarray:
        """(members,) fraction of `split` (images, labels) each member (or each of `rows`) gets right."""
        images, labels = split
        mean_image = self.splits.train.mean_image
        if self.stacked:
            params = self.state.params if self._every(rows) else _take(self.state.params, np.asarray(rows))
            counts = step.stacked_count_correct(self.graphdef, params, images, labels, mean_image)
        else:
            counts = [step.count_correct(self.graphdef, self.state.params, images, labels, mean_image)]
        return np.asarray(counts) / len(labels)

    def val_accuracies(self) -> np.ndarray | None:
        """(members,) validation accuracy at the current step, measured once per step; None without a
        validation split. Each member keeps its value (a rung and the next log point share it)."""
        if len(self.splits.val[1]) == 0:
            return None
        if any(m.val_step != self.step for m in self.members):
            for m, value in zip(self.members, self.accuracies(self.splits.val), strict=True):
                m.val_step, m.val_accuracy = self.step, float(value)
        return np.asarray([m.val_accuracy for m in self.members])

    def logits(self, batch_indices: np.ndarray) -> np.ndarray:
        """(members, batch, 10) logits of each member on its batch (`batch_indices` (members, batch))."""
        train = self.splits.train
        if self.stacked:
            return np.asarray(
                step.stacked_logits(
                    self.graphdef, self.state.params, train.images, batch_indices, train.mean_image
                )
            )
        images = train.images[batch_indices[0]]
        return np.asarray(step.predict(self.graphdef, self.state.params, images, train.mean_image))[None]

    def host_state(self) -> tuple[Any, Any]:
        """(params, opt_state) of every member, on the host: one transfer for all of them."""
        return jax.device_get((self.state.params, self.state.opt_state))

    def member_state(self, row: int, host_state: tuple[Any, Any]) -> tuple[Any, Any]:
        """Member `row`'s (params, opt_state) out of `host_state`, at its own width."""
        if not self.stacked:
            return host_state
        tree = jax.tree.map(lambda leaf: leaf[row], host_state)
        return model.resize(tree, self.members[row].cfg.hidden)

    def _every(self, rows: list[int] | None) -> bool:
        """Whether `rows` are all members in order: a gather would only copy the state."""
        return rows is None or list(rows) == list(range(len(self.members)))

    def keep(self, rows: list[int]) -> None:
        """Go on with the members at `rows` only (the others ended)."""
        if self._every(rows):
            return
        self.members = [self.members[r] for r in rows]
        if self.stacked and self.members:
            index = np.asarray(rows)
            state = self.state
            params, opt_state, alive = _take((state.params, state.opt_state, state.alive), index)
            self.state = step.TrainState(params, opt_state, alive, state.step)
            self.hyper = _take(self.hyper, index)

    def copy_rows(self, dst: list[int], src: list[int]) -> None:
        """Members `dst` take the parameters and optimizer state of members `src` (stacked only)."""
        state = self.state
        params, opt_state, alive = _copy_rows(
            (state.params, state.opt_state, state.alive), jnp.asarray(dst), jnp.asarray(src)
        )
        self.state = step.TrainState(params, opt_state, alive, state.step)

    def set_hyperparameters(self) -> None:
        """Take each member's `lr` and `reg` into the program (after a controller changed them)."""
        if self.stacked:
            self.hyper = self.hyper._replace(lr=self._column("lr"), reg=self._column("reg"))
        else:
            member = self.members[0]
            self.hyper = self.hyper._replace(lr=jnp.float32(member.lr), reg=jnp.float32(member.reg))

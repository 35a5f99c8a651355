"""Runs on the device: a `Program` trains one or many members (sweeper.train.member) as one compiled scan.

A program holds a single run's plain state (`stacked=False`) or the states of a group stacked on a
leading member axis (`stacked=True`, `jax.vmap` around the same step), on one device or split over
several; its layout (sweeper.train.layouts) owns what differs between them. Narrower members of a
stacked group (along the axes their model marks paddable, sweeper.task.models) are zero-padded to the
widest and their padding is masked out of every update. The engine
(sweeper.train.engine) drives both kinds the same way: train to a step, measure, read members out, drop
the members that ended.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from omegaconf import OmegaConf

from sweeper import memory, work
from sweeper.objective import Objective
from sweeper.task import models, train_step
from sweeper.train.devices import Placement
from sweeper.train.layouts import layout, member_row
from sweeper.train.layouts import stack as _stack  # noqa: F401  (tests stack host states with it)
from sweeper.train.member import Member, new_member
from sweeper.train.rows import MemberRows
from sweeper.train.segments import CompiledSegments, batches

__all__ = ["CompiledSegments", "Member", "Program", "batches", "new_member"]


class Program(MemberRows):
    """`members` trained together on `splits` (a dataset on the device); stacked, with a `placement`
    over several devices, the member axis is split over them (sweeper.train.devices).

    Members start together at their common step, or, with `step` given (a slot pool), each at its own:
    the program counts its own steps from `step` and a member's offset turns them into the member's.
    `widths`: the sizes every member's paddable axes are padded to ({model key: size}; default: the
    widest member's); `slots`: the rows
    the program is sized for, which occupancy counts (default: its members); `pool`: its number as a
    slot pool (sweeper.train.engine refills it). Its members' rows and state: sweeper.train.rows."""

    def __init__(
        self,
        members: list[Member],
        splits: train_step.DeviceSplits,
        *,
        stacked: bool,
        placement: Placement | None = None,
        step: int | None = None,
        widths: dict[str, int] | None = None,
        slots: int | None = None,
        pool: int | None = None,
    ):
        if not stacked and len(members) != 1:
            raise ValueError("an unstacked program trains exactly one member")
        step = members[0].start if step is None else step
        widths = widths or widest(members)
        super().__init__(members, splits, layout(stacked, placement), step, widths)
        self.spec = members[0].spec  # the model, at the widths `_segment` sets
        self.initial_size = len(members)
        self.objective = Objective.of(members[0].cfg)  # what controllers rank its members by
        # Every member shares it (sweeper.config.fuse_key); kept, since a slot pool may empty and refill.
        self.optimizer = members[0].cfg.optimizer
        self.slots = slots or len(members)
        self.pool = pool  # the slot pool's number within its sweep, None for a program of fixed members
        self.segments = CompiledSegments(self._segment())
        self.member_steps = self.slot_steps = 0  # trained by members, and the slots' capacity
        self._take_initial(members)

    def _segment(self) -> Any:
        """The jitted segment for the program's widths (and its model's graphs, set here)."""
        self.spec = self.spec.with_keys(**self.widths)
        model = models.abstract(self.spec)
        self.graphdef, self.eval_graphdef, self.padding = model.graphdef, model.eval_graphdef, model.padding
        self.eval_chunk = memory.eval_chunk(self.spec)
        scan = not (model.convolutional and jax.default_backend() == "cpu")  # train_step.SteppedSegment
        return _jitted_segment(self.spec, OmegaConf.to_yaml(self.optimizer), self.stacked, scan)

    def add(self, members: list[Member]) -> None:
        """Members join the program at its current step, each from its own start (a slot pool: they
        take the rows of members that ended); stacked programs only. A wider member widens the
        program: every member is padded to it, as narrower members always are."""
        if members:
            states = self._host_states(widest([*self.members, *members]))
            self.members += members
            self._take_initial(members, states)

    def keep(self, rows: list[int]) -> None:
        """Go on with the members at `rows` only; a slot pool's program narrows to the widest of them."""
        super().keep(rows)
        if self.pool is not None and self.members and (narrower := widest(self.members)) != self.widths:
            self._take_initial([], self._host_states(narrower))

    def _host_states(self, widths: dict[str, int]) -> list[Any]:
        """The members' states on the host, padded (or cut) to `widths`, which the program takes on."""
        host = jax.device_get((self.state.params, self.state.opt_state))
        states = [member_row(host, index) for index in range(len(self.members))]
        if widths != self.widths:
            states = [self.padding.resize(state, widths) for state in states]
            self.widths = widths
            self.segments.recompile(self._segment())
        return states

    # --- training -----------------------------------------------------------------------------------

    def train(self, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Train every member to step `stop`: (losses, batch accuracies), each (steps, members)."""
        batch_indices = batches(self.members, self.step, stop)
        if batch_indices.ndim == 3:  # a batch per member: padded like the members
            batch_indices = self.layout.pad(batch_indices, axis=1)
        self.state, (losses, accuracies) = self.segments(
            self.state, self.hyper, self.splits.train, batch_indices, steps=stop - self.step
        )
        self.member_steps += len(self.members) * (stop - self.step)
        self.slot_steps += max(self.slots, len(self.members)) * (stop - self.step)
        count_work(self, stop - self.step)
        self.step = stop
        losses, accuracies = (self.layout.results(v, len(self.members)) for v in (losses, accuracies))
        for j, member in enumerate(self.members):
            member.last_losses = losses[:, j]
        return losses, accuracies

    # --- measuring ----------------------------------------------------------------------------------

    def evaluate(self, split: str, rows: list[int] | None = None) -> dict[str, np.ndarray]:
        """{`<split>_accuracy`, `<split>_loss`}: (members,) accuracy and mean cross-entropy (no L2 term)
        of each member (or each of `rows`) over the whole split `split` (train, val or test)."""
        images, labels = self.splits.images_and_labels(split)
        params = (
            self.state.params if self._every(rows) else self.layout.take_measured(self.state.params, rows)
        )
        correct, loss = train_step.members_correct_and_loss(
            self.eval_graphdef,
            params,
            images,
            labels,
            self.splits.train.norm,
            stacked=self.stacked,
            chunk=self.eval_chunk,
        )
        size = len(self.members) if rows is None else len(rows)
        return {f"{split}_accuracy": correct[:size] / len(labels), f"{split}_loss": loss[:size] / len(labels)}

    def measured(self, split: str) -> dict[str, np.ndarray] | None:
        """`evaluate(split)` of every member at the current step, measured once per step (a rung, the
        objective and the next log point share it); None when the split is empty."""
        if self.splits.size(split) == 0:
            return None
        if any(m.measured_at.get(split) != self.step for m in self.members):
            for j, member in enumerate(self.members):
                member.measured_at[split] = self.step
                member.measured |= {key: float(values[j]) for key, values in self.evaluate(split).items()}
        keys = (f"{split}_accuracy", f"{split}_loss")
        return {key: np.asarray([m.measured[key] for m in self.members]) for key in keys}

    def objective_values(self) -> np.ndarray | None:
        """(members,) the value of the members' objective (sweeper.objective) at the current step; None
        when its split is empty."""
        measured = self.measured(self.objective.split)
        return None if measured is None else measured[self.objective.metric]

    def final_metrics(self, rows: list[int]) -> list[dict[str, float | None]]:
        """Accuracy and loss on every split of each member at `rows` ({`train_accuracy`, ..., `test_loss`});
        None for a split without examples (val, without a validation split)."""
        columns: dict[str, Any] = {}
        for split in ("train", "val", "test"):
            if self.splits.size(split) == 0:
                columns |= {f"{split}_{kind}": [None] * len(rows) for kind in ("accuracy", "loss")}
            elif split == "val" or all(m.measured_at.get(split) == self.step for m in self.members):
                columns |= {key: values[rows] for key, values in self.measured(split).items()}
            else:  # measured for these rows only: the others go on training
                columns |= self.evaluate(split, rows)
        return [
            {key: None if values[i] is None else float(values[i]) for key, values in columns.items()}
            for i in range(len(rows))
        ]


def count_work(program: Program, steps: int) -> None:
    """Add `steps` steps of forward-pass work (sweeper.work) to each member's (own, computed): what its own
    model needs, and what its row computes at the program's widths."""
    batch = program.members[0].cfg.batch_size
    row = work.forward_flops(program.spec, batch) * steps
    for member in program.members:
        own = work.forward_flops(member.spec, batch) * steps
        member.work = (member.work[0] + own, member.work[1] + row)


@functools.lru_cache(maxsize=64)
def _jitted_segment(spec: models.Spec, optimizer: str, stacked: bool, scan: bool) -> Any:
    """One jitted segment per model (at its widths), optimizer (its YAML) and layout, shared by the
    programs that train it (a slot pool makes and ends programs as members come and go): compiled once
    per set of shapes (sweeper.train.segments)."""
    model = models.abstract(spec)
    make_optimizer = train_step.optimizer_factory(OmegaConf.create(optimizer))
    return train_step.make_segment(model.graphdef, model.padding, make_optimizer, stacked, scan)


def histogram_tensors(program: Program) -> list[dict[str, np.ndarray]]:
    """Each member's logits on its next batch and its weights, by TensorBoard tag."""
    members, step = program.members, program.step
    batch_indices = np.stack([m.order.indices(step - m.offset, step - m.offset + 1)[0] for m in members])
    train = program.splits.train
    logits = train_step.members_logits(
        program.eval_graphdef,
        program.state.params,
        train.images,
        program.layout.pad(batch_indices),
        train.norm,
        stacked=program.stacked,
    )
    return [
        {"logits": logits[j], **train_step.weight_tensors(params)}
        for j, (params, _) in program.member_states(range(len(members)))
    ]


def widest(members: list[Member]) -> dict[str, int]:
    """The widest of `members`' paddable keys, key by key: the widths a program of them pads to."""
    return models.widest([member.widths for member in members])


def show_widths(widths: dict[str, int]) -> str:
    """`width 240` (one paddable key), `widths a=8, b=16` (several), `no paddable axes` (none): for logs."""
    if len(widths) == 1:
        return f"width {next(iter(widths.values()))}"
    return (
        "widths " + ", ".join(f"{k}={v}" for k, v in sorted(widths.items())) if widths else "no paddable axes"
    )

"""What a program (sweeper.train.program) runs a segment with: its jitted segment compiled once per set
of argument shapes and timed (`CompiledSegments`), and the image indices of its members' batches."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from sweeper import memory
from sweeper.train.member import Member

# Compiled segments by (jitted segment, argument shapes and dtypes), for every program of the process:
# a program that a slot pool starts at shapes another one had runs what that one compiled.
_COMPILED: dict[tuple[Any, tuple], Any] = {}


class CompiledSegments:
    """A jitted segment compiled ahead of time, once per set of argument shapes (segment length, group
    size) in the process, and timed: compile time apart from training time, and when the first step
    ended."""

    def __init__(self, jitted: Any, what: str = "this program"):
        self.jitted = jitted
        self.what = what  # how a memory error names the program
        self.compile_s = self.train_s = 0.0
        self.first_step_done: float | None = None  # time.perf_counter() at the end of the first step

    def recompile(self, jitted: Any) -> None:
        """Go on with another jitted segment (a program that widened or narrowed), its timings kept."""
        self.jitted = jitted

    def __call__(self, *args: Any, steps: int) -> tuple[Any, Any]:
        """Run one segment of `steps` steps and wait for it: (state, outputs as numpy)."""
        started, compile_before = time.perf_counter(), self.compile_s
        # Compiled per shapes and layout: a program over several devices takes its arrays split over them.
        shapes = tuple(
            (np.shape(leaf), np.result_type(leaf), getattr(leaf, "sharding", None))
            for leaf in jax.tree.leaves(args)
        )
        key = (self.jitted, shapes)
        if key not in _COMPILED:
            compiled = self.jitted.lower(*args).compile()
            memory.check_compiled(compiled, self.what)  # refused before it runs out of memory
            _COMPILED[key] = compiled
            self.compile_s += time.perf_counter() - started
        state, outputs = _COMPILED[key](*args)
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

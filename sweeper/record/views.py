"""What a run's record is told, as plain values: the trainer (sweeper.train) builds these from its
programs and members, so that the record never reads the machinery that trains a run.

    Snapshot  a member's state at a step, as its checkpoint keeps it
    Ending    how and where a run ended, with what it measured
    Usage     what a program's training took so far (its timings, its slot pool)
    Span      where one member is in its program: its own steps, and the program step it joined at
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.status import Status


@dataclass(frozen=True)
class Snapshot:
    """A run at its step `step`: (params, opt_state) at its own width, the model's `mean_image`, where it
    is in its data order, its history's record (sweeper.train.history) and its last segment's losses."""

    step: int
    params: Any
    opt_state: Any
    mean_image: Any
    scale: Any  # 1/std of data.preprocess=standardize, else None
    data_fingerprint: str | None  # of the data it trains on (sweeper.task.data.Info)
    data_order: dict[str, Any]
    history: dict[str, list[dict[str, Any]]]
    last_losses: np.ndarray | None


@dataclass(frozen=True)
class Ending:
    """A run that ended `status` at its step `step`: its last segment's losses, what it measured on each
    split ({`train_accuracy`, `train_loss`, ..., `test_loss`}; None when it diverged) and its history's
    record."""

    status: Status
    step: int
    last_losses: np.ndarray | None
    measured: dict[str, float | None] | None
    history: dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Seat:
    """Slot pool `id`, of `slots` rows, that a program is."""

    id: int
    slots: int


@dataclass(frozen=True)
class Usage:
    """A program's timings so far (time.perf_counter() seconds): compile and train time, when its first
    step ended (None before), its step now; `fused_jobs`, the members it started with where stacked, and
    `pool`, where it is a slot pool."""

    compile_s: float
    train_s: float
    first_step_done: float | None
    step: int
    fused_jobs: int | None
    pool: Seat | None


@dataclass(frozen=True)
class Span:
    """One member's attempt: from its own step `start` to its own step `step`, in a program it joined at
    program step `joined`."""

    start: int
    step: int
    joined: int
    work: tuple[float, float] = (0.0, 0.0)  # forward-pass FLOPs: its own model's, and its row's (padded)

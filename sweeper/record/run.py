"""What a run leaves in its folder, whoever trains it: log lines, TensorBoard events, checkpoints and
metrics.json.

One `RunRecord` per run. The engine decides when to write (sweeper.train.engine) and tells the record what
it needs as plain values (sweeper.record.views); this module decides what is written and how, the same for
a single run and for every member of a fused group.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sweeper import config
from sweeper.objective import Objective
from sweeper.record import checkpoint, graph
from sweeper.record.views import Ending, Snapshot, Span, Usage
from sweeper.record.writer import RunWriter, write_metrics
from sweeper.status import Status


class RunRecord:
    """One run's outputs in `workdir`, its log lines going to `logger`."""

    def __init__(self, cfg: Any, workdir: str | Path, logger: logging.Logger):
        self.workdir = Path(workdir)
        self.log = logger
        self.cfg_dict = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, enum_to_str=True)
        self.hparams = config.hyperparameters(self.cfg_dict)
        self.objective = Objective.of(cfg)  # what metrics.json's `objective` is the value of
        self.writer: RunWriter | None = None
        self.model: dict[str, Any] | None = None  # what rebuilds its model (checkpoints), set by `open`
        self.saved_step: int | None = None  # the step of the last checkpoint written
        self.attempts: list[dict] = []  # what earlier attempts cost, from the checkpoint it resumed from
        self.status: Status | None = None  # set when it ends
        self.metrics: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.workdir.name

    def log_config(self) -> None:
        """The run's first log line: every hyperparameter."""
        self.log.info("config: %s", " ".join(f"{k}={v}" for k, v in self.hparams.items()))

    def open(self, start: int, info: Any) -> None:
        """Start writing TensorBoard events, the run's graph first (its train step on the data `info`
        describes, sweeper.task.data.Info); on resume, events an earlier attempt wrote past `start` go."""
        self.writer = RunWriter(self.workdir, purge_step=start)
        self.model = {
            "config": self.cfg_dict["model"],
            "input_shape": [int(n) for n in info.input_shape],
            "num_classes": int(info.num_classes),
        }
        try:
            self.writer.graph(graph.run_graph(self.cfg_dict, info))
        except Exception as error:  # reads JAX's traced program: never worth stopping a run for
            self.log.warning("no graph for TensorBoard's Graphs tab: %s: %s", type(error).__name__, error)

    def log_point(self, step: int, loss: float, train_accuracy: float, val: dict[str, float] | None) -> None:
        """One log point, in the article's words: the step's loss and batch accuracy, before its update;
        with a validation split, its accuracy and mean cross-entropy `val` ({val_accuracy, val_loss})."""
        val = val or {}
        self.writer.scalars(
            step,
            {
                "loss/train": loss,
                "accuracy/train": train_accuracy,
                "accuracy/val": val.get("val_accuracy"),
                "loss/val": val.get("val_loss"),
            },
        )
        shown = "".join(f"  {key} {value:.4f}" for key, value in val.items())
        self.log.info("step %d  loss %.4f  train_accuracy %.4f%s", step, loss, train_accuracy, shown)

    def schedule_point(self, step: int, values: dict[str, float]) -> None:
        """What it trains with from `step` on ({lr, reg, optimizer.momentum, ...}), when it changes:
        `hyperparameters/lr`, ... in TensorBoard."""
        self.writer.scalars(step, {f"hyperparameters/{key}": value for key, value in values.items()})

    def histograms(self, step: int, tensors: dict[str, Any]) -> None:
        self.writer.histograms(step, tensors)

    def checkpoint(self, snapshot: Snapshot, attempt: dict) -> Path:
        """Save `checkpoints/step_<step>.pkl` of the run as `snapshot` has it, with the cost of every attempt
        so far (this one, `attempt`, last)."""
        path = checkpoint.save(
            self.workdir / "checkpoints",
            step=snapshot.step,
            model=self.model,
            config=self.cfg_dict,
            params=snapshot.params,
            opt_state=snapshot.opt_state,
            mean_image=snapshot.mean_image,
            scale=snapshot.scale,
            data_fingerprint=snapshot.data_fingerprint,
            data_order=snapshot.data_order,
            history=snapshot.history,
            attempts=[*self.attempts, attempt],
            last_losses=snapshot.last_losses,
        )
        self.saved_step = snapshot.step
        self.log.info("saved checkpoint %s", path)
        return path

    def finish(self, ending: Ending, cost: Cost) -> None:
        """End the run as `ending` says: metrics.json (results, cost, history), the final values as each
        metric's last point (what HParams shows), the HParams session with its status, the closing log
        lines."""
        metrics = final_metrics(
            ending.status, ending.step, ending.last_losses, ending.measured, self.objective
        )
        metrics.update(cost.of(self.attempts), **ending.history)
        self.status, self.metrics = ending.status, metrics
        self.writer.final(metrics)
        self.writer.session(self.hparams, ending.status)
        write_metrics(self.workdir, metrics)
        if metrics["test_accuracy"] is not None:
            self.log.info("test accuracy %.4f", metrics["test_accuracy"])
        t, attempts = metrics["timings"], len(metrics["attempts"])
        self.log.info(
            "status %s, total time %.1f s%s (data %.1f s, compile %.1f s, %d steps in %.1f s)",
            metrics["status"],
            metrics["wall_time_s"],
            f" over {attempts} attempts" if attempts > 1 else "",
            t["data_s"],
            t["compile_s"],
            t["steps_run"],
            t["train_s"],
        )
        self.close()

    def interrupted(self, step: int, signum: int, cost: Cost) -> None:
        """Record a run stopped by a signal after its checkpoint at `step`: a rerun resumes it."""
        metrics = final_metrics(Status.INTERRUPTED, step, None, None, self.objective) | cost.of(self.attempts)
        self.status, self.metrics = Status.INTERRUPTED, metrics
        self.writer.final(metrics)  # the rerun purges these events past its start
        self.writer.session(self.hparams, Status.INTERRUPTED)
        write_metrics(self.workdir, metrics)
        self.log.warning(
            "interrupted by %s at step %d: checkpoint written, a rerun resumes from it",
            signal.Signals(signum).name,
            step,
        )
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass(frozen=True)
class Clock:
    """When an engine started, what loading its data took, and how many members share its wall time."""

    started: float
    data_s: float
    members: int

    def attempt(self, start: int, step: int) -> dict[str, Any]:
        """An attempt at a member from step `start` to `step`: its equal share of the wall time so far."""
        share_s = (time.perf_counter() - self.started) / self.members
        return {"from_step": start, "to_step": step, "wall_time_s": round(share_s, 3)}

    def cost(self, usage: Usage, span: Span) -> Cost:
        """What the member at `span` of a program (with `usage`) cost in this attempt, and where the time
        went."""
        elapsed = time.perf_counter() - self.started
        first_step_s = usage.first_step_done - self.started if usage.first_step_done else 0.0
        steps = span.step - span.start
        timings = {
            "data_s": round(self.data_s, 3),
            "compile_s": round(usage.compile_s, 3),
            "first_step_s": round(first_step_s, 3),
            "train_s": round(usage.train_s, 3),
            "steps_run": steps,
            "steps_per_s": round(steps / usage.train_s, 1) if usage.train_s > 0 else None,
        }
        if usage.fused_jobs is not None:
            timings |= {"fused_jobs": usage.fused_jobs, "fused_wall_time_s": round(elapsed, 3)}
        if usage.pool is not None:  # the slots it shared, and when it held one (program steps)
            timings["pool"] = {
                "id": usage.pool.id,
                "slots": usage.pool.slots,
                "joined": span.joined,
                "left": usage.step,
                # compute occupancy's terms (sweeper.work): what it needed, what its row computed
                "gflop": round(span.work[0] / 1e9, 3),
                "gflop_computed": round(span.work[1] / 1e9, 3),
            }
        return Cost(self.attempt(span.start, span.step), timings)


@dataclass(frozen=True)
class Cost:
    """This attempt at a run and its timings: metrics.json's cost keys, with the earlier attempts."""

    attempt: dict[str, Any]
    timings: dict[str, Any]

    def of(self, earlier: list[dict]) -> dict[str, Any]:
        attempts = [*earlier, self.attempt]
        wall = round(sum(a["wall_time_s"] for a in attempts), 3)
        return {"wall_time_s": wall, "attempts": attempts, "timings": self.timings}


SPLIT_METRICS = tuple(
    f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("accuracy", "loss")
)


def final_metrics(
    status: Status,
    step: int,
    last_losses: np.ndarray | None,
    measured: dict[str, float | None] | None,
    objective: Objective,
) -> dict[str, Any]:
    """metrics.json's results. `measured` holds the accuracy and mean cross-entropy (without the L2 term)
    on each split, None when the run diverged (its parameters are not finite); val values are None without
    a validation split. `objective`: the value of `objective`'s metric, its worst value for a run
    without one (sweeper.objective), None for a run without the split it is measured on."""
    loss = float(np.mean(last_losses)) if last_losses is not None else None
    measured = measured or {}
    metrics = {
        "status": status.value,
        "steps": step,
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        **{key: measured.get(key) for key in SPLIT_METRICS},
    }
    metrics["objective"] = objective.value(metrics)
    return metrics

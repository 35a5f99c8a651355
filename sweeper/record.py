"""What a run leaves in its folder, whoever trains it: log lines, TensorBoard events, checkpoints and
metrics.json.

One `RunRecord` per run. The engine decides when to write (sweeper.engine); this module decides what
is written and how, the same for a single run and for every member of a fused group.
"""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sweeper import checkpoint, config
from sweeper.status import Status
from sweeper.writer import RunWriter, write_metrics


class RunRecord:
    """One run's outputs in `workdir`, its log lines going to `logger`."""

    def __init__(self, cfg: Any, workdir: str | Path, logger: logging.Logger):
        self.workdir = Path(workdir)
        self.log = logger
        self.cfg_dict = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, enum_to_str=True)
        self.hparams = config.hyperparameters(self.cfg_dict)
        self.writer: RunWriter | None = None
        self.saved_step: int | None = None  # the step of the last checkpoint written

    @property
    def name(self) -> str:
        return self.workdir.name

    def log_config(self) -> None:
        """The run's first log line: every hyperparameter."""
        self.log.info("config: %s", " ".join(f"{k}={v}" for k, v in self.hparams.items()))

    def open(self, start: int) -> None:
        """Start writing TensorBoard events; on resume, events an earlier attempt wrote past `start` go."""
        self.writer = RunWriter(self.workdir / "tb", purge_step=start)

    def log_point(self, step: int, loss: float, train_accuracy: float, val_accuracy: float | None) -> None:
        """One log point, in the article's words: the step's loss and batch accuracy, before its update."""
        self.writer.scalars(
            step, {"loss/train": loss, "accuracy/train": train_accuracy, "accuracy/val": val_accuracy}
        )
        val = f"  val_accuracy {val_accuracy:.4f}" if val_accuracy is not None else ""
        self.log.info("step %d  loss %.4f  train_accuracy %.4f%s", step, loss, train_accuracy, val)

    def hyperparameters(self, step: int, lr: float, reg: float) -> None:
        """The learning rate and L2 constant it trains with from `step` on (when they change)."""
        self.writer.scalars(step, {"hyperparameters/lr": lr, "hyperparameters/reg": reg})

    def histograms(self, step: int, tensors: dict[str, Any]) -> None:
        self.writer.histograms(step, tensors)

    def checkpoint(self, step: int, **state: Any) -> Path:
        """Save `checkpoints/step_<step>.pkl` (see sweeper.checkpoint.save for the keys of `state`)."""
        path = checkpoint.save(self.workdir / "checkpoints", step=step, config=self.cfg_dict, **state)
        self.saved_step = step
        self.log.info("saved checkpoint %s", path)
        return path

    def finish(self, metrics: dict[str, Any]) -> None:
        """Close the record: the final values as each metric's last point (what HParams shows), the
        HParams session with the run's status, metrics.json, and the closing log lines."""
        self.writer.final(metrics)
        self.writer.session(self.hparams, Status(metrics["status"]))
        write_metrics(self.workdir, metrics)
        if metrics["test_accuracy"] is not None:
            self.log.info("test accuracy %.4f", metrics["test_accuracy"])
        t, attempts = metrics["timings"], len(metrics.get("attempts", ()))
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

    def interrupted(self, step: int, signum: int, cost: dict[str, Any]) -> None:
        """Record a run stopped by a signal after its checkpoint at `step`: a rerun resumes it."""
        metrics = final_metrics(Status.INTERRUPTED, step, None, None) | cost
        self.writer.final(metrics)  # the rerun purges these events past its start
        self.writer.session(self.hparams, Status.INTERRUPTED)
        write_metrics(self.workdir, metrics)
        self.log.warning(
            "interrupted by %s at step %d: checkpoint written, a rerun resumes from it",
            signal.Signals(signum).name,
            step,
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def final_metrics(
    status: Status, step: int, last_losses: np.ndarray | None, accuracies: tuple | None
) -> dict[str, Any]:
    """metrics.json's results. `accuracies` is (train, val, test), None when the run diverged (its
    parameters are not finite); val is None without a validation split."""
    loss = float(np.mean(last_losses)) if last_losses is not None else None
    train_accuracy, val_accuracy, test_accuracy = accuracies or (None, None, None)
    metrics = {
        "status": status.value,
        "steps": step,
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
    }
    metrics["objective"] = objective(metrics)
    return metrics


def objective(metrics: dict[str, Any]) -> float:
    """What a sweep maximises: val accuracy (test accuracy without a val split), 0 if there is none."""
    value = metrics["val_accuracy"] if metrics["val_accuracy"] is not None else metrics["test_accuracy"]
    return float(value) if value is not None and math.isfinite(value) else 0.0

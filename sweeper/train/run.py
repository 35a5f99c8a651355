"""One run: `train_and_evaluate(cfg, workdir)`, and `evaluate_checkpoint`, the article's restore_model.py.

Read top to bottom: validate the config, load the data, build the run (fresh or resumed), put it on the
device as a one-member program, and let the engine train it (sweeper.train.engine: when to log, checkpoint
and stop; sweeper.record.run: what the run leaves). The step maths is in sweeper.task.train_step.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax

from sweeper import checks, config, memory
from sweeper.record import checkpoint
from sweeper.record.run import Clock, RunRecord
from sweeper.task import data, model, train_step
from sweeper.train.controllers import ScheduleReplay
from sweeper.train.engine import Engine, Schedule
from sweeper.train.program import Program, new_member
from sweeper.train.pruning import TrialPruning, has_trial

log = logging.getLogger(__name__)


def enable_compilation_cache(directory: str | Path) -> None:
    """Keep every compiled program in `directory`, so that later runs (each job of a sweep) reuse it."""
    jax.config.update("jax_compilation_cache_dir", str(Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small programs count too


def check_batch_size(cfg: Any, num_train: int) -> None:
    """The config check assumed the official sizes; the loaded training set may be smaller."""
    if cfg.batch_size > num_train:
        raise config.ConfigError(
            f"batch_size must be <= the training-set size {num_train}, got {cfg.batch_size}"
        )


def train_and_evaluate(cfg: Any, workdir: str | Path) -> dict[str, Any]:
    """Train as `cfg` says, writing TensorBoard events, checkpoints/ and metrics.json into `workdir`;
    return the metrics."""
    started = time.perf_counter()
    checks.validate(cfg)
    memory.check_fits(cfg)  # from what the config says of the data (a user's arrays: loaded once here)
    record = RunRecord(cfg, workdir, log)
    record.log_config()

    dataset = data.load(cfg.data)
    data_s = time.perf_counter() - started
    check_batch_size(cfg, dataset.info.num_train)
    member = new_member(cfg, record, dataset.info)
    program = Program([member], train_step.to_device(dataset), stacked=False)
    controllers = [ScheduleReplay(), *([TrialPruning([member])] if has_trial(cfg) else [])]
    record.open(member.start, dataset.info)
    try:
        Engine([program], Schedule.of(cfg), controllers=controllers, clock=Clock(started, data_s, 1)).run()
    finally:
        record.close()
    return member.metrics


def evaluate_checkpoint(cfg: Any, path: str | Path) -> dict[str, Any]:
    """Rebuild a checkpoint's model and report its test accuracy (refused on other data than it was
    trained on)."""
    path = checkpoint.resolve(path)
    payload = checkpoint.load(path)
    dataset = data.load(cfg.data)
    checkpoint.check_data(payload, dataset.info.fingerprint, path)
    hidden = model.hidden_size(payload["params"])
    graphdef, template = model.abstract(hidden, model.shape_of(payload["params"]))
    params = checkpoint.restore_params(payload, template, path)
    norm = (payload["mean_image"], payload.get("scale"))
    test_accuracy = train_step.accuracy(graphdef, params, dataset.test_images, dataset.test_labels, norm)
    log.info("restored %s: step %d, hidden %d", path, payload["step"], hidden)
    log.info("test accuracy %.4f", test_accuracy)
    return {"step": payload["step"], "hidden": hidden, "test_accuracy": test_accuracy}

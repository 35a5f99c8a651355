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
from omegaconf import OmegaConf

from sweeper import checks, config, memory
from sweeper.record import checkpoint
from sweeper.record.run import Clock, RunRecord
from sweeper.task import data, models, train_step
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


# Where the data lives rather than what it is: a checkpoint's data config takes these from the command's.
LOCATION_KEYS = ("root", "url", "md5", "path")


def checkpoint_data(cfg: Any, payload: dict) -> Any:
    """The data a checkpoint was trained on: its own data config, located as the command says where it
    names the same source (data.root, data.path, ...)."""
    saved = OmegaConf.create((payload.get("config") or {}).get("data") or OmegaConf.to_container(cfg.data))
    if saved.get("name") == cfg.data.get("name"):
        for key in LOCATION_KEYS:
            if key in saved and OmegaConf.select(cfg.data, key, default=None) is not None:
                saved[key] = cfg.data[key]
    return saved


def evaluate_checkpoint(cfg: Any, path: str | Path) -> dict[str, Any]:
    """Rebuild a checkpoint's model from the checkpoint alone (its model config, input shape and classes)
    and report its test accuracy on the data it was trained on (refused where that data changed)."""
    path = checkpoint.resolve(path)
    payload = checkpoint.load(path)
    data_cfg = checkpoint_data(cfg, payload)
    dataset = data.load(data_cfg)
    checkpoint.check_data(payload, dataset.info.fingerprint, path)
    saved = payload["model"]
    shape = (tuple(saved["input_shape"]), int(saved["num_classes"]))
    if shape != dataset.info.model_shape:
        raise checkpoint.CheckpointError(
            f"{path} was trained on inputs {shape[0]} with {shape[1]} classes; the data gives "
            f"{dataset.info.input_shape} with {dataset.info.num_classes}"
        )
    model, params = restore_model(payload, path, dataset.info.dtype)
    spec = model.spec
    norm = (payload["mean_image"], payload.get("scale"))
    test_accuracy = train_step.accuracy(
        model.eval_graphdef, params, dataset.test_images, dataset.test_labels, norm, memory.eval_chunk(spec)
    )
    keys = models.model_keys(saved["config"])
    log.info("restored %s: step %d, %s(%s)", path, payload["step"], spec.name, _keys_text(keys))
    log.info("test accuracy %.4f", test_accuracy)
    return {"step": payload["step"], **keys, "test_accuracy": test_accuracy}


def restore_model(payload: dict, path: Path, data_dtype: str = "float32") -> tuple[models.Abstract, Any]:
    """(the model, its state) of a loaded checkpoint, rebuilt from the checkpoint alone: its model config,
    input shape and classes (`data_dtype`: what its inputs are where data.preprocess=none)."""
    saved, data_cfg = payload["model"], (payload.get("config") or {}).get("data") or {}
    preprocess = data_cfg.get("preprocess", "center")
    dtype = str(data_dtype) if preprocess == "none" else "float32"
    keys = tuple(sorted((k, models.hashable(v)) for k, v in models.model_keys(saved["config"]).items()))
    shape = tuple(int(n) for n in saved["input_shape"])
    spec = models.Spec(str(saved["config"]["_target_"]), keys, shape, dtype, int(saved["num_classes"]))
    model = models.abstract(spec)
    return model, checkpoint.restore_params(payload, model.state, path)


def _keys_text(keys: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(keys.items()))

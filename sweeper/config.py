"""Typed configuration: dataclass schemas for Hydra's ConfigStore (see `register`), plus validation.

The YAML under `conf/` only selects and overrides; every key, type and default is declared here, so a
wrong type or an unknown key is refused by OmegaConf before anything runs. Imports Hydra/OmegaConf only.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
PREPROCESS = ("center", "standardize", "none")  # data.preprocess (sweeper.task.data)
LAYOUTS = ("flat", "image")  # data.layout of CIFAR-shaped data
MULTIRUN_RECORD = "multirun.yaml"  # a sweep's record, which Hydra's sweepers write into its folder


# Keys that do not change what is trained: left out of job folder names, sweep groups and HParams.
# (`sweep` picks a sweep config; what it changes shows up as the swept keys themselves.)
NOT_HYPERPARAMETERS = (
    "data.root",
    "data.url",
    "data.md5",
    "progress",
    "jax_cache_dir",
    "resume",
    "histograms",
    "mode",
    "checkpoint",
    "log_every",
    "checkpoint_every",
    "sweep",
    "trial.storage",
    "trial.study_name",
    "trial.number",
    "objective.metric",
    "objective.mode",
)


# Keys that mean something only inside a sweep: a command that reruns one job leaves them out. (It keeps
# `sweep=...`: a sweep config may set keys too, as sweep=pbt sets hidden; alone, its sweep is ignored.)
SWEEP_ONLY_KEYS = ("trial.storage", "trial.study_name", "trial.number")


# What the fused launcher batches inside one program, beside the optimizer's numeric keys and, where it
# pads widths, the model's paddable keys; configs equal in every other key (optimizer.name, batch_size,
# max_steps, data, model, ...) can train together. (`hidden` reaches the MLP as its model.hidden.)
FUSABLE_KEYS = ("lr", "reg", "seed", "hidden")
# Per-job settings the fused launcher applies to each member itself.
PER_JOB_KEYS = ("progress", "resume", "trial")


class ConfigError(ValueError):
    """A config value is out of range; the message names the key."""


class Mode(enum.Enum):
    train = "train"
    eval = "eval"


@dataclass
class Cifar10Config:
    """The official CIFAR-10 "python version", downloaded once into `root` (or found there)."""

    name: str = "cifar10"
    # Cache folder, the `cifar-10-batches-py` folder itself, or a `cifar-10-python.tar.gz`.
    root: str = "${oc.env:SWEEPER_DATA_DIR,'~/.cache/sweeper/cifar10'}"
    url: str = CIFAR10_URL
    md5: str | None = CIFAR10_MD5  # null skips the check (for a tarball you built yourself)
    val_size: int = 5000  # held out from the end of the official training order; 0 = as the article
    preprocess: str = "center"  # center (minus the training mean: the article's) | standardize | none
    layout: str = "flat"  # flat: (3072,) in the official planar order | image: (32, 32, 3) HWC


@dataclass
class SyntheticConfig:
    """CIFAR-shaped data with class-dependent patterns plus noise: learnable, tiny, no download."""

    name: str = "synthetic"
    train_size: int = 6000
    test_size: int = 1000
    val_size: int = 1000
    noise: float = 64.0  # stddev of the per-pixel noise on the 0..255 scale
    seed: int = 0  # picks the dataset; fixed so that a sweep over `seed` sees the same data
    preprocess: str = "center"
    layout: str = "flat"


@dataclass
class NpzConfig:
    """Your own arrays in an .npz file: x_train, y_train, x_test, y_test, optionally x_val, y_val
    (docs/data.md). x: any numeric dtype and shape (N, ...); y: integer class labels 0..C-1."""

    name: str = "npz"
    path: str = MISSING  # relative to the folder you run from
    val_size: int = 0  # training examples held out from the end for validation (without x_val)
    preprocess: str = "center"  # center | standardize | none (integers reach the model as integers)


@dataclass
class LoaderConfig:
    """Your own function that returns the arrays of data=npz as a dict: `_target_` is its dotted path
    (found on PYTHONPATH); keys you add with `+data.key=value` are its keyword arguments."""

    name: str = "loader"
    _target_: str = MISSING
    val_size: int = 0
    preprocess: str = "center"


@dataclass
class SGDConfig:
    """Plain gradient descent, as the article."""

    name: str = "sgd"


@dataclass
class MomentumConfig:
    name: str = "momentum"
    momentum: float = 0.9
    nesterov: bool = False


@dataclass
class AdamConfig:
    name: str = "adam"
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclass
class ScheduleChange:
    """From `step` on, train with learning rate `lr`, L2 constant `reg` and, where given, these values of
    the optimizer's numeric keys (`optimizer: {momentum: 0.8}`)."""

    step: int = MISSING
    lr: float = MISSING
    reg: float = MISSING
    optimizer: dict[str, float] = field(default_factory=dict)


@dataclass
class TrialConfig:
    """Set by the Optuna sweeper on each job of a study that prunes, never by hand: where the job
    reports its validation accuracy (sweeper.train.pruning)."""

    storage: str | None = None
    study_name: str | None = None
    number: int | None = None


@dataclass
class ObjectiveConfig:
    """What a sweep optimises (sweeper.objective): val_accuracy, val_loss, train_accuracy or train_loss
    (losses: mean cross-entropy over the whole split, without the L2 term), to max or min."""

    metric: str = "val_accuracy"
    mode: str = "max"


@dataclass
class Config:
    """Defaults are the article's: 3072-120-10 MLP, SGD lr 0.001, reg 0.1, batch 400, 2000 steps."""

    data: Any = MISSING
    optimizer: Any = MISSING
    # The model (sweeper.task.models): `_target_`, an nnx.Module class, and its constructor's keys.
    model: Any = MISSING
    # The MLP's width (model=mlp sets it: 120; its `model.hidden` is `${hidden}`); null with other models.
    hidden: int | None = None
    lr: float = 0.001
    reg: float = 0.1
    batch_size: int = 400
    max_steps: int = 2000
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 1000
    histograms: bool = True  # logits and weight histograms at each log point
    progress: bool | None = None  # null: a progress bar when stderr is a terminal
    mode: Mode = Mode.train
    checkpoint: str | None = None  # mode=eval: a checkpoint file or a run folder (its latest checkpoint)
    resume: bool = False  # continue from the latest checkpoint in the run folder
    # Hyperparameter changes during the run, e.g. a population-based training member's, to replay it:
    # '[{step: 400, lr: 0.0008, reg: 1.2}, ...]'. Empty: lr and reg hold throughout.
    schedule: list[ScheduleChange] = field(default_factory=list)
    trial: TrialConfig = field(default_factory=TrialConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # JAX's persistent compilation cache: the second run of a shape compiles nothing (null: off).
    jax_cache_dir: str | None = "${oc.env:SWEEPER_JAX_CACHE,'~/.cache/sweeper/jax'}"


def register() -> None:
    """Store sweeper's schemas in Hydra's ConfigStore (so that `conf/<group>/<option>.yaml` can extend
    `/schema/<group>/<option>`) and its resolvers in OmegaConf.

    Called by run.py and by code that composes sweeper's configs; importing sweeper stores nothing, so
    another Hydra app in the same environment keeps its own `base_config`.
    """
    if not OmegaConf.has_resolver("sweeper.job_name"):
        OmegaConf.register_new_resolver("sweeper.job_name", job_name)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schemas in {
        "data": (Cifar10Config, SyntheticConfig, NpzConfig, LoaderConfig),
        "optimizer": (SGDConfig, MomentumConfig, AdamConfig),
    }.items():
        for schema in schemas:
            cs.store(group=f"schema/{group}", name=schema.name, node=schema)


def hyperparameters(cfg_dict: dict) -> dict[str, Any]:
    """The config's scalar leaves as dotted keys (`hidden`, `optimizer.name`, ...), minus bookkeeping."""
    flat: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif value is None or value == [] or f"{prefix}{key}" in NOT_HYPERPARAMETERS:
                continue
            elif isinstance(value, list):  # a schedule: one compact string
                flat[f"{prefix}{key}"] = json.dumps(value, separators=(",", ":"))
            else:
                flat[f"{prefix}{key}"] = value.value if isinstance(value, enum.Enum) else value

    walk(cfg_dict, "")
    # A model key that only repeats a top-level key (the MLP's `model.hidden: ${hidden}`) is shown once.
    return {k: v for k, v in flat.items() if not (k.startswith("model.") and flat.get(k[6:], ...) == v)}


def override_key(override: str) -> str:
    """The key an override sets: `hidden` for `hidden=60`, `+foo=1` or `~foo`."""
    return str(override).split("=", 1)[0].lstrip("+~")


def sweep_overrides(hydra_cfg: Any) -> list:
    """The sweep as Hydra's sweepers see it: `hydra.sweeper.params` then the command line, parsed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    params += [str(o) for o in hydra_cfg.overrides.task]
    return OverridesParser.create().parse_overrides(params)


def swept_keys(sweep_dir: str | Path) -> set[str]:
    """The keys a sweep varies (a list, range, choice or interval), from its `multirun.yaml`."""
    path = Path(sweep_dir) / MULTIRUN_RECORD
    return set(_swept_keys(str(path), path.stat().st_mtime_ns)) if path.is_file() else set()


@functools.lru_cache(maxsize=8)
def _swept_keys(path: str, mtime_ns: int) -> tuple[str, ...]:
    overrides = sweep_overrides(OmegaConf.load(path).hydra)
    return tuple(override_key(o.get_key_element()) for o in overrides if o.is_sweep_override())


def job_name(task_overrides: Any, sweep_dir: str | None = None) -> str:
    """A sweep job's folder name: the overrides of the keys the sweep varies, sorted, comma-joined
    (`hidden=60,lr=0.001`). What every job shares stays in the sweep's multirun.yaml and in each job's
    `.hydra/`. Without swept keys (one job), every override but bookkeeping names it.

    The name depends only on the overrides, so rerunning a sweep finds each job's earlier folder. A
    folder whose job was trained with other overrides (a rerun that changed a fixed key) is refused
    with ConfigError rather than continued.
    """
    overrides = [str(o) for o in task_overrides]
    swept = swept_keys(sweep_dir) if sweep_dir else set()
    keep = [o for o in overrides if override_key(o) in swept]
    keep = keep or [o for o in overrides if override_key(o) not in NOT_HYPERPARAMETERS]
    name = ",".join(sorted(o.lstrip("+~") for o in keep)).replace("/", "_") or "default"
    if sweep_dir:
        _check_same_job(Path(sweep_dir) / name, overrides)
    return name


def _check_same_job(folder: Path, overrides: list[str]) -> None:
    record = folder / ".hydra" / "overrides.yaml"
    # An empty record is one a kill cut off while Hydra wrote it (a job that resumes, such as an Optuna
    # trial left running): it says nothing about the job (a written one is never empty: `[]` at least).
    if not record.is_file() or not record.read_text().strip():
        return

    def hyperparameters_of(items: Any) -> set[str]:
        return {str(o).lstrip("+~") for o in items if override_key(o) not in NOT_HYPERPARAMETERS}

    before, now = hyperparameters_of(OmegaConf.load(record)), hyperparameters_of(overrides)
    if before != now:
        was, is_now = " ".join(sorted(before - now)) or "nothing", " ".join(sorted(now - before)) or "nothing"
        raise ConfigError(
            f"{folder} holds a job trained with other overrides ({was}; now {is_now}): rerun it with "
            "the same overrides, or give the new sweep its own hydra.sweep.dir"
        )


def optimizer_numeric_keys(opt: Any) -> tuple[str, ...]:
    """The optimizer config's numeric keys (momentum, b1, b2, eps, ...): values members of one program
    may differ in, and schedules may change (sweeper.task.train_step)."""
    return tuple(sorted(k for k, v in opt.items() if isinstance(v, (int, float)) and not isinstance(v, bool)))


def fuse_key(cfg_dict: dict, *, paddable: tuple[str, ...] = ()) -> str:
    """Configs with the same key can train as one fused program: equal in everything but lr, reg, seed,
    the optimizer's numeric keys and the model keys in `paddable` (where widths are padded: the model's
    paddable keys, sweeper.task.models)."""
    skip = set(FUSABLE_KEYS + PER_JOB_KEYS)
    kept = {k: v for k, v in cfg_dict.items() if k not in skip}
    optimizer = dict(kept.get("optimizer") or {})
    kept["optimizer"] = {k: v for k, v in optimizer.items() if k not in optimizer_numeric_keys(optimizer)}
    kept["model"] = {k: v for k, v in dict(kept.get("model") or {}).items() if k not in paddable}
    return json.dumps(kept, sort_keys=True, default=str)


def validate(cfg: Any) -> None:
    """Raise ConfigError naming the first key whose value is out of range, from the config alone
    (sweeper.checks.validate adds what needs the objective and the data)."""

    def require(ok: bool, key: str, rule: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{key} must be {rule}, got {value!r}")

    _validate_hidden(cfg, require)
    require(math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "> 0 and finite", cfg.lr)
    require(math.isfinite(cfg.reg) and cfg.reg >= 0, "reg", ">= 0 and finite", cfg.reg)
    require(cfg.max_steps >= 1, "max_steps", ">= 1", cfg.max_steps)
    require(0 <= cfg.seed < 2**31, "seed", "in [0, 2**31)", cfg.seed)
    require(cfg.log_every >= 1, "log_every", ">= 1", cfg.log_every)
    require(cfg.checkpoint_every >= 1, "checkpoint_every", ">= 1", cfg.checkpoint_every)

    _validate_data(cfg, require)

    previous = 0
    for i, change in enumerate(cfg.schedule):
        key = f"schedule[{i}]"
        require(
            previous < change.step < cfg.max_steps, f"{key}.step", f"in ({previous}, max_steps)", change.step
        )
        require(math.isfinite(change.lr) and change.lr > 0, f"{key}.lr", "> 0 and finite", change.lr)
        require(math.isfinite(change.reg) and change.reg >= 0, f"{key}.reg", ">= 0 and finite", change.reg)
        numeric = optimizer_numeric_keys(cfg.optimizer)
        for name, value in change.optimizer.items():
            rule = f"a numeric key of optimizer={cfg.optimizer.name} ({', '.join(numeric) or 'none'})"
            require(name in numeric, f"{key}.optimizer.{name}", rule, value)
        previous = change.step

    opt = cfg.optimizer
    if opt.name == "momentum":
        require(0 <= opt.momentum < 1, "optimizer.momentum", "in [0, 1)", opt.momentum)
    if opt.name == "adam":
        require(0 <= opt.b1 < 1, "optimizer.b1", "in [0, 1)", opt.b1)
        require(0 <= opt.b2 < 1, "optimizer.b2", "in [0, 1)", opt.b2)
        require(opt.eps > 0, "optimizer.eps", "> 0", opt.eps)
    if Mode(cfg.mode) is Mode.eval:
        require(
            bool(cfg.checkpoint),
            "checkpoint",
            "a checkpoint file or run folder with mode=eval",
            cfg.checkpoint,
        )


def _validate_hidden(cfg: Any, require: Any) -> None:
    """`hidden` is the width of a model that takes it as `model.hidden: ${hidden}` (the article's MLP);
    set with another model, it would change nothing: refused."""
    if cfg.hidden is None:
        return
    require(cfg.hidden >= 1, "hidden", ">= 1", cfg.hidden)
    model = cfg.get("model")
    if model is None or model.get("hidden") != cfg.hidden:
        target = model.get("_target_") if model is not None else None
        raise ConfigError(
            f"hidden sets the width of model=mlp (the article's MLP); the model {target} takes its own keys: "
            "set model.<key>=... instead"
        )


def _validate_data(cfg: Any, require: Any) -> None:
    """The data keys, and batch_size's lower bound (sweeper.checks checks it against the data's size)."""
    data = cfg.data
    if data.name == "synthetic":
        require(data.train_size >= 2, "data.train_size", ">= 2", data.train_size)
        require(data.test_size >= 1, "data.test_size", ">= 1", data.test_size)
        require(math.isfinite(data.noise) and data.noise >= 0, "data.noise", ">= 0", data.noise)
    require(data.val_size >= 0, "data.val_size", ">= 0", data.val_size)
    preprocess = data.get("preprocess", "center")
    require(preprocess in PREPROCESS, "data.preprocess", " | ".join(PREPROCESS), preprocess)
    require(data.get("layout", "flat") in LAYOUTS, "data.layout", " | ".join(LAYOUTS), data.get("layout"))
    require(cfg.batch_size >= 1, "batch_size", ">= 1 (and at most the training-set size)", cfg.batch_size)

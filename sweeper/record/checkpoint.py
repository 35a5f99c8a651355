"""Pickle checkpoints: one self-describing dict of numpy arrays and plain values (no Orbax).

    checkpoints/step_<N>.pkl = {format, step, model, params (nested dict), opt_state (list of leaves),
                                mean_image, data_order, config, history, attempts, last_losses,
                                versions}

`model` is what rebuilds the model without the run's config: its config (`_target_` and keys), input
shape and number of classes; `params` its whole state (Params, batch statistics, RNG counts and key
data). Checkpoints of format 1 (before `model`; every one the article's MLP) load as format 2. Saved
atomically; loaded through the restricted unpickler, so a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import pickle
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from sweeper import safe_pickle
from sweeper.files import atomic_write
from sweeper.task import model

FORMAT = "sweeper-checkpoint/2"
FORMATS = ("sweeper-checkpoint/1", FORMAT)  # what loads
_NAME = re.compile(r"step_(\d+)\.pkl")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the configured run."""


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a checkpoint, for the record."""
    out = {"python": platform.python_version()}
    for dist in ("sweeper", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def path_for(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step}.pkl"


def save(
    directory: Path,
    *,
    step: int,
    model: dict | None = None,
    params: nnx.State,
    opt_state: Any,
    mean_image: Any,
    data_order: dict,
    scale: Any = None,
    data_fingerprint: str | None = None,
    config: dict,
    history: dict | None = None,
    attempts: list | None = None,
    last_losses: Any = None,
) -> Path:
    """Write `checkpoints/step_<step>.pkl` atomically and return its path."""
    to_numpy = lambda x: np.asarray(jax.device_get(x))  # noqa: E731
    payload = {
        "format": FORMAT,
        "step": int(step),
        "model": model,  # {config, input_shape, num_classes}
        "params": jax.tree.map(to_numpy, nnx.to_pure_dict(params)),
        "opt_state": [to_numpy(leaf) for leaf in jax.tree.leaves(opt_state)],
        "mean_image": None if mean_image is None else to_numpy(mean_image),  # the input pipeline's
        "scale": None if scale is None else to_numpy(scale),
        "data_fingerprint": data_fingerprint,  # resume and eval refuse other data
        "data_order": dict(data_order),
        "config": config,
        "history": history or {},  # a schedule and lineage, where the run has them (plain values)
        "attempts": attempts or [],  # what earlier attempts of the run cost, up to this checkpoint
        "last_losses": None if last_losses is None else to_numpy(last_losses),  # of the segment before
        "versions": versions(),
    }
    path = path_for(directory, step)
    atomic_write(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def all_steps(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `step_<N>.pkl` in `directory`, newest first."""
    directory = Path(directory)
    found = [(int(m.group(1)), p) for p in directory.glob("step_*.pkl") if (m := _NAME.fullmatch(p.name))]
    return sorted(found, reverse=True)


def latest(directory: Path) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None."""
    found = all_steps(directory)
    return found[0][1] if found else None


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the latest one in a run folder (or in its `checkpoints/`)."""
    path = Path(path)
    if path.is_dir():
        for directory in (path / "checkpoints", path):
            if found := latest(directory):
                return found
        raise CheckpointError(f"no checkpoints/step_<N>.pkl in {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def load(path: Path) -> dict:
    """Read a checkpoint through the restricted unpickler and check its format."""
    try:
        with open(path, "rb") as f:
            payload = safe_pickle.load(f)
    except safe_pickle.ForbiddenGlobal as e:
        raise CheckpointError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as e:
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") not in FORMATS:
        raise CheckpointError(f"{path} is not a sweeper checkpoint (format {' or '.join(FORMATS)})")
    if not payload.get("model") and isinstance(payload.get("params"), dict):  # format 1: the article's MLP
        payload["model"] = model.upgrade_v1(payload["params"])
    return payload


def _shapes(tree: Any) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}


def restore_params(payload: dict, template: nnx.State, path: Path) -> nnx.State:
    """`template` (a freshly initialised model's params) filled with the checkpoint's values."""
    want, got = _shapes(nnx.to_pure_dict(template)), _shapes(payload["params"])
    if want != got:
        diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
        detail = ", ".join(f"{k}: checkpoint {got.get(k)} vs config {want.get(k)}" for k in diff)
        raise CheckpointError(
            f"{path} does not fit the configured model ({detail}); was it written with another model or "
            "other model keys?"
        )
    nnx.replace_by_pure_dict(template, jax.tree.map(np.asarray, payload["params"]))
    return template


def restore_opt_state(payload: dict, template: Any, path: Path) -> Any:
    """`template` (a fresh optimizer state) with the checkpoint's leaves, after checking they fit."""
    leaves, treedef = jax.tree.flatten(template)
    saved = payload["opt_state"]
    if len(saved) != len(leaves) or any(
        np.shape(a) != np.shape(b) for a, b in zip(saved, leaves, strict=True)
    ):
        raise CheckpointError(
            f"{path}: its optimizer state does not fit the configured optimizer "
            f"(was it written with another optimizer?)"
        )
    return jax.tree.unflatten(treedef, [np.asarray(a) for a in saved])


def restore_latest(
    directory: Path,
    params: nnx.State,
    opt_state: Any,
    data_order: dict,
    logger: logging.Logger,
    upto: int | None = None,
    fingerprint: str | None = None,
) -> tuple[nnx.State, Any, int, dict]:
    """(params, opt_state, step, payload) from the newest checkpoint in `directory` that loads (and is
    not past step `upto`), or the given ones at step 0 (and an empty payload) when there is none.

    A checkpoint that cannot be read (cut short by a full disk, say) is passed over with a warning
    naming it, and left in place. One that loads but was written for another model, optimizer, seed,
    batch size, training set or data (its `fingerprint`, sweeper.task.data.Info) is refused: resuming from
    it would not continue the same run.
    """
    for step, path in all_steps(directory):
        if upto is not None and step > upto:
            continue
        try:
            payload = load(path)
        except CheckpointError as error:
            logger.warning("cannot resume from it: %s; trying an earlier checkpoint", error)
            continue
        check_data(payload, fingerprint, path)
        params = restore_params(payload, params, path)
        opt_state = restore_opt_state(payload, opt_state, path)
        saved = {k: payload["data_order"].get(k) for k in ("seed_words", "num_images", "batch_size")}
        expected = {k: data_order[k] for k in saved}
        if saved != expected:
            raise CheckpointError(
                f"{path} was written with another seed, batch_size or training set (data order "
                f"{saved}, config gives {expected}); resuming would not continue the same run"
            )
        logger.info("resumed from %s (step %d)", path, step)
        return params, opt_state, step, payload
    logger.info("no checkpoint to resume from in %s: starting at step 0", directory)
    return params, opt_state, 0, {}


def check_data(payload: dict, fingerprint: str | None, path: Path) -> None:
    """Refuse a checkpoint written on other data than `fingerprint` (one written before checkpoints kept
    a fingerprint is taken on trust)."""
    saved = payload.get("data_fingerprint")
    if saved is not None and fingerprint is not None and saved != fingerprint:
        raise CheckpointError(
            f"{path} was written on other data (fingerprint {saved}, the data now gives {fingerprint}): "
            "the data or data.preprocess changed; train the new data in a new run folder"
        )

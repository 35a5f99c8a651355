"""Fused training: configs that differ only in lr, reg, seed and hidden, trained as one program.

The engine of `hydra/launcher=fused` (hydra_plugins/sweeper_fused), importable without Hydra:

    metrics = train_group([cfg_a, cfg_b, ...], [workdir_a, workdir_b, ...])

Each member leaves in its workdir what `train.train_and_evaluate` would: tb/ (scalars, histograms, its
HParams session), checkpoints/step_<N>.pkl in the single-run format (so any member resumes, or goes
on alone), metrics.json and its log lines. Only how the work is done differs:

- one jitted `lax.scan` per segment, `jax.vmap` over the members' parameters, optimizer states (the
  learning rate is a value in the state, through `optax.inject_hyperparams`), reg and data order.
  Members with one seed share every batch, so XLA turns their K products into one wide matmul;
- widths: a member narrower than the group is zero-padded, and its padded units are masked out of
  every update, so they stay exactly zero and the member computes what it computes alone;
- isolation: a member whose loss stops being finite is frozen inside the step (its updates are
  dropped), reported `diverged` at the end of that segment, and taken out of the program;
- successive halving: at each rung the best `keep` fraction by validation accuracy trains on; the
  rest stop with their last metrics and status `pruned`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sweeper import checkpoint, config, data, model, train
from sweeper.writer import RunWriter

log = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


@dataclass(frozen=True)
class Halving:
    """Successive halving: at each step in `rungs`, keep the best `keep` fraction of the members."""

    rungs: tuple[int, ...]
    keep: float

    def survivors(self, candidates: int) -> int:
        return max(1, math.ceil(self.keep * candidates))


class GroupState(NamedTuple):
    """The state of every member of a program, stacked on a leading member axis; donated per segment."""

    params: nnx.State
    opt_state: optax.OptState
    alive: jax.Array  # (members,) bool: False once a member's loss was not finite; its state is frozen
    step: jax.Array


class MemberSettings(NamedTuple):
    """Per-member constants of the program: the L2 constant and the mask of the member's own units."""

    reg: jax.Array  # (members,)
    unit_mask: jax.Array | None  # (members, width) 1/0, None when every member has the group's width


def _unit_axis(path: tuple) -> int | None:
    """The axis that indexes hidden units in a parameter-shaped leaf (also in optimizer states)."""
    keys = [getattr(k, "key", None) for k in path]
    if "hidden" in keys:
        return 0  # hidden.kernel (units, 3072), hidden.bias (units,)
    if "output" in keys and "kernel" in keys:
        return 1  # output.kernel (10, units)
    return None


def resize(tree: Any, width: int) -> Any:
    """`tree` (parameters, or an optimizer state holding parameter-shaped leaves) as numpy arrays on the
    host, with the hidden units cut or zero-padded to `width`. On the host: slicing members on the device
    would dispatch (and compile) a small program per leaf and shape."""

    def fix(path, leaf):
        leaf = np.asarray(leaf)
        axis = _unit_axis(path)
        if axis is None:
            return leaf
        index = [slice(None)] * leaf.ndim
        index[axis] = slice(0, width)
        padding = [(0, 0)] * leaf.ndim
        padding[axis] = (0, max(width - leaf.shape[axis], 0))
        return np.pad(leaf[tuple(index)], padding)

    return jax.tree_util.tree_map_with_path(fix, tree)


def mask_units(tree: Any, unit_mask: jax.Array) -> Any:
    """A parameter-shaped `tree` multiplied by `unit_mask` along the hidden units (padding stays zero)."""

    def fix(path, leaf):
        axis = _unit_axis(path)
        if axis is None:
            return leaf
        shape = [1] * leaf.ndim
        shape[axis] = -1
        return leaf * unit_mask.reshape(shape)

    return jax.tree_util.tree_map_with_path(fix, tree)


def make_group_segment(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation):
    """A `segment(state, settings, data, batch_indices) -> (state, (losses, accuracies))` for a group.

    `batch_indices` is (steps, batch) when the members share their batches, or (steps, members,
    batch); losses and accuracies come back as (steps, members).
    """

    def member_step(params, opt_state, alive, settings, batch_idx, data):
        mask = (
            None
            if settings.unit_mask is None
            else functools.partial(mask_units, unit_mask=settings.unit_mask)
        )
        new_params, new_opt_state, loss, accuracy = train.gradient_step(
            graphdef, optimizer, params, opt_state, batch_idx, data, settings.reg, mask
        )
        alive = alive & jnp.isfinite(loss)
        keep = lambda new, old: jnp.where(alive, new, old)  # noqa: E731
        return (
            jax.tree.map(keep, new_params, params),
            jax.tree.map(keep, new_opt_state, opt_state),
            alive,
            loss,
            accuracy,
        )

    def segment(state: GroupState, settings: MemberSettings, data: train.DeviceData, batch_indices):
        def step(state: GroupState, batch_idx: jax.Array):
            per_member = jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0 if batch_idx.ndim == 2 else None, None))
            params, opt_state, alive, loss, accuracy = per_member(
                state.params, state.opt_state, state.alive, settings, batch_idx, data
            )
            return GroupState(params, opt_state, alive, state.step + 1), (loss, accuracy)

        return jax.lax.scan(step, state, batch_indices)

    return train.CompiledSegments(jax.jit(segment, donate_argnums=0))


@functools.partial(jax.jit, static_argnums=0)
def group_logits(graphdef, params, images, batch_idx, mean_image) -> jax.Array:
    """(members, batch, 10) logits of each member on its batch `batch_idx[member]`."""
    logits = lambda p, idx: train.predict(graphdef, p, images[idx], mean_image)  # noqa: E731
    return jax.vmap(logits)(params, batch_idx)


@functools.partial(jax.jit, static_argnums=0)
def group_count_correct(graphdef, params, images, labels, mean_image) -> jax.Array:
    """(members,) how many `images` each member classifies correctly."""
    count = lambda p: train.count_correct(graphdef, p, images, labels, mean_image)  # noqa: E731
    return jax.vmap(count)(params)


class _Member:
    """One job of a group: its config, its folder, its writer and logger, and how far it got."""

    def __init__(self, cfg: Any, workdir: Path, log_file: Path | None, log_format: str):
        self.cfg, self.workdir, self.name = cfg, Path(workdir), Path(workdir).name
        self.cfg_dict = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, enum_to_str=True)
        self.hparams = config.hyperparameters(self.cfg_dict)
        # Its own logger, so that its lines go to its own job log as a single run's would.
        self.log = logging.Logger("sweeper.fused")
        if log_file is None:
            self.log.parent = log
        else:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(log_file)
            handler.setFormatter(logging.Formatter(log_format))
            self.log.addHandler(handler)
        # Set by _init_member: its data order, and its (possibly resumed) state at `start`.
        self.order: train.BatchOrder | None = None
        self.params: nnx.State | None = None
        self.opt_state: optax.OptState | None = None
        self.start = 0
        self.writer: RunWriter | None = None
        self.last_losses: np.ndarray | None = None
        self.metrics: dict[str, Any] | None = None  # set when it ends: ok, diverged or pruned

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        for handler in self.log.handlers:
            handler.close()


def train_group(
    cfgs: list[Any],
    workdirs: list[str | Path],
    *,
    halving: Halving | None = None,
    log_files: list[Path | None] | None = None,
    log_format: str = LOG_FORMAT,
    device_data: dict[str, tuple[train.DeviceSplits, float]] | None = None,
) -> list[dict[str, Any]]:
    """Train `cfgs` as one fused program, each into its workdir; return each one's metrics.

    The configs must be equal in everything but lr, reg, seed and hidden. `device_data` caches the
    datasets on the device across calls (one copy per process); `log_files` receive each member's
    log lines (else they go to this module's logger).
    """
    started = time.perf_counter()
    for cfg in cfgs:
        config.validate(cfg)
    members = [
        _Member(cfg, Path(w), f, log_format)
        for cfg, w, f in zip(cfgs, workdirs, log_files or [None] * len(cfgs), strict=True)
    ]
    try:
        if len({config.fuse_key(m.cfg_dict, pad_hidden=True) for m in members}) > 1:
            raise config.ConfigError("fused configs must differ only in lr, reg, seed and hidden")
        cfg = cfgs[0]
        if halving and cfg.data.val_size == 0:
            raise config.ConfigError("successive halving ranks by val accuracy: it needs data.val_size > 0")
        splits, data_s = _device_splits(cfg.data, device_data)
        for m in members:
            train.log_config(m.log, m.hparams)
            _init_member(m, len(splits.train.labels))
        # Members resumed from different steps cannot share a scan: each start gets its own program.
        by_start = itertools.groupby(sorted(members, key=lambda m: m.start), key=lambda m: m.start)
        for start, part in by_start:
            _train_program(list(part), start, splits, halving, started, data_s, len(members))
    finally:
        for m in members:
            m.close()
    return [m.metrics for m in members]


def _device_splits(data_cfg: Any, cache: dict | None) -> tuple[train.DeviceSplits, float]:
    key = OmegaConf.to_yaml(data_cfg)
    if cache is not None and key in cache:
        return cache[key]
    started = time.perf_counter()
    dataset = data.load(data_cfg)
    entry = (train.to_device(dataset), time.perf_counter() - started)
    if cache is not None:
        cache[key] = entry
    return entry


def _init_member(m: _Member, num_train: int) -> None:
    """Initial (or resumed) parameters and optimizer state, exactly as the member's single run has them."""
    params, order_seed = train.init_run(m.cfg.hidden, m.cfg.seed)
    opt_state = train.make_optimizer(m.cfg).init(params)
    m.order = train.BatchOrder(order_seed, num_train, m.cfg.batch_size)
    m.params, m.opt_state = params, opt_state
    if m.cfg.resume:
        m.params, m.opt_state, m.start = train.resume(
            m.workdir / "checkpoints", params, opt_state, m.order, m.log
        )


def _stack(trees: list[Any]) -> Any:
    """Host trees stacked on a new leading member axis, copied to the device in one go."""
    return jax.device_put(jax.tree.map(lambda *leaves: np.stack(leaves), *trees))


def _take(tree: Any, rows: Any) -> Any:
    return jax.tree.map(lambda leaf: leaf[rows], tree)


def _train_program(
    part: list[_Member],
    start: int,
    splits: train.DeviceSplits,
    halving: Halving | None,
    started: float,
    data_s: float,
    group_size: int,
) -> None:
    cfg = part[0].cfg
    width = max(m.cfg.hidden for m in part)
    graphdef, _ = model.abstract(width)
    optimizer = optax.inject_hyperparams(train.optimizer_factory(cfg.optimizer))(learning_rate=0.0)

    def fused_opt_state(m: _Member) -> Any:
        state = optimizer.init(m.params)
        hyperparams = {**state.hyperparams, "learning_rate": jnp.asarray(m.cfg.lr, jnp.float32)}
        return state._replace(
            count=jnp.asarray(start, jnp.int32), hyperparams=hyperparams, inner_state=m.opt_state
        )

    state = GroupState(
        _stack([resize(m.params, width) for m in part]),
        _stack([resize(fused_opt_state(m), width) for m in part]),
        jnp.ones(len(part), bool),
        np.int32(start),
    )
    padded = any(m.cfg.hidden < width for m in part)
    unit_mask = (
        np.stack([np.arange(width) < m.cfg.hidden for m in part]).astype(np.float32) if padded else None
    )
    settings = MemberSettings(jnp.asarray([m.cfg.reg for m in part], jnp.float32), unit_mask)
    segment = make_group_segment(graphdef, optimizer)
    rungs = set(halving.rungs) if halving else set()
    has_val = len(splits.val[1]) > 0
    log.info(
        "fused program: %d jobs, width %d%s, from step %d%s",
        len(part),
        width,
        " (narrower members padded and masked)" if padded else "",
        start,
        f", halving at steps {sorted(r for r in rungs if r > start)} keeping {halving.keep:g}"
        if halving
        else "",
    )
    for m in part:
        m.writer = RunWriter(m.workdir / "tb", purge_step=start)
        m.log.info("fused with %d jobs in one program (width %d)", len(part), width)

    def accuracies(params, split) -> np.ndarray:
        images, labels = split
        return np.asarray(
            group_count_correct(graphdef, params, images, labels, splits.train.mean_image)
        ) / len(labels)

    def on_host(tree: Any, j: int, m: _Member) -> Any:
        """Member j's part of a stacked host tree, at its own width."""
        return resize(jax.tree.map(lambda leaf: leaf[j], tree), m.cfg.hidden)

    def finish(members: list[tuple[int, _Member]], status: str, val_acc: np.ndarray | None = None) -> None:
        """Evaluate (unless diverged) and close these members' records; `val_acc`: already measured."""
        rows = np.asarray([j for j, _ in members])
        if status == "diverged":
            evaluated = [None] * len(members)
        else:
            params = _take(state.params, rows)
            train_acc = accuracies(params, (splits.train.images, splits.train.labels))
            if val_acc is None:
                val_acc = accuracies(params, splits.val) if has_val else [None] * len(members)
            test_acc = accuracies(params, splits.test)
            evaluated = [
                tuple(None if a is None else float(a) for a in t)
                for t in zip(train_acc, val_acc, test_acc, strict=True)
            ]
        elapsed = time.perf_counter() - started
        for (_, m), accs in zip(members, evaluated, strict=True):
            m.metrics = train.final_metrics(status, step, m.last_losses, accs)
            m.metrics["wall_time_s"] = round(elapsed / group_size, 3)  # its share of the group's time
            m.metrics["objective"] = train.objective(m.metrics)
            m.metrics["timings"] = {
                **train.timings(data_s, segment, started, step - start),
                "fused_jobs": len(part),
                "fused_wall_time_s": round(elapsed, 3),
            }
            train.finish(m.workdir, m.writer, m.hparams, m.metrics, m.log)

    training = list(enumerate(part))  # (row in the program's state, member)
    step = start
    rung_val: dict[int, float] = {}  # val accuracy by id(member) at the rung just passed, reused below
    ends = sorted(set(train.segment_ends(start, cfg)) | {r for r in rungs if start < r < cfg.max_steps})
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=cfg.max_steps, initial=start, unit="step", disable=not train.show_progress(cfg), leave=False
        ) as bar,
    ):
        for stop in ends:
            batches = [m.order.indices(step, stop) for _, m in training]
            shared = all(m.order.seed_words == training[0][1].order.seed_words for _, m in training)
            batch_indices = batches[0] if shared else np.stack(batches, axis=1)
            logging_now = step % cfg.log_every == 0
            if logging_now:
                if rung_val:  # measured at this step for the cut: not again
                    val_accuracy = [rung_val[id(m)] for _, m in training]
                elif has_val:
                    val_accuracy = accuracies(state.params, splits.val)
                else:
                    val_accuracy = [None] * len(training)
                if cfg.histograms:
                    first_batches = np.stack([b[0] for b in batches])
                    logits = np.asarray(
                        group_logits(
                            graphdef,
                            state.params,
                            splits.train.images,
                            first_batches,
                            splits.train.mean_image,
                        )
                    )
                    params = jax.device_get(state.params)
                    for j, m in training:
                        weights = train.weight_tensors(on_host(params, j, m))
                        m.writer.histograms(step, {"logits": logits[j], **weights})
            rung_val = {}
            state, (losses, batch_accuracies) = segment(  # (steps, members) each
                state, settings, splits.train, batch_indices, steps=stop - step
            )
            if logging_now:
                for j, m in training:
                    val = None if val_accuracy[j] is None else float(val_accuracy[j])
                    scalars = {"loss": float(losses[0, j]), "train_accuracy": float(batch_accuracies[0, j])}
                    m.writer.scalars(step, {**scalars, "val_accuracy": val})
                    train.log_step(m.log, step, scalars["loss"], scalars["train_accuracy"], val)
                if has_val:
                    best = int(np.argmax(val_accuracy))
                    log.info(
                        "step %d: %d jobs training, best val accuracy %.4f (%s)",
                        step,
                        len(training),
                        val_accuracy[best],
                        training[best][1].name,
                    )
            bar.update(stop - step)
            step = stop
            for j, m in training:
                m.last_losses = losses[:, j]
            diverged = [(j, m) for j, m in training if not np.isfinite(m.last_losses).all()]
            for _, m in diverged:
                m.log.warning("loss is not finite by step %d: frozen, status diverged", step)
            if diverged:
                finish(diverged, "diverged")
            live = [(j, m) for j, m in training if m.metrics is None]
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or step in rungs:
                params, opt_states = jax.device_get((state.params, state.opt_state.inner_state))
                for j, m in live:
                    path = checkpoint.save(
                        m.workdir / "checkpoints",
                        step=step,
                        params=on_host(params, j, m),
                        opt_state=on_host(opt_states, j, m),
                        mean_image=splits.train.mean_image,
                        data_order=m.order.state(step),
                        config=m.cfg_dict,
                    )
                    m.log.info("saved checkpoint %s", path)
            if step == cfg.max_steps:
                finish(live, "ok")
            elif step in rungs and len(live) > 1:
                val_now = accuracies(_take(state.params, np.asarray([j for j, _ in live])), splits.val)
                order = np.argsort(-val_now, kind="stable")
                keep = halving.survivors(len(live))
                pruned = [live[i] for i in sorted(order[keep:])]
                for i in order[keep:]:
                    live[i][1].log.info(
                        "pruned at step %d: val accuracy %.4f is not in the best %d of %d",
                        step,
                        val_now[i],
                        keep,
                        len(live),
                    )
                log.info(
                    "rung at step %d: %d of %d jobs go on, %d pruned", step, keep, len(live), len(pruned)
                )
                finish(pruned, "pruned", val_now[sorted(order[keep:])])
                rung_val = {id(m): float(v) for (_, m), v in zip(live, val_now, strict=True)}
            still = [(j, m) for j, m in training if m.metrics is None]
            if not still:
                break
            if len(still) < len(training):  # take the finished members out of the program
                rows = np.asarray([j for j, _ in still])
                state = GroupState(*_take(state[:3], rows), state.step)
                settings = _take(settings, rows)
                training = [(new_row, m) for new_row, (_, m) in enumerate(still)]
    counts = {s: sum(m.metrics["status"] == s for m in part) for s in ("ok", "diverged", "pruned")}
    log.info(
        "fused program done in %.1f s (compile %.1f s): %s",
        time.perf_counter() - started,
        segment.compile_s,
        ", ".join(f"{n} {s}" for s, n in counts.items() if n),
    )

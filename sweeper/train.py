"""Loss, train step, evaluation and the training loop: `train_and_evaluate(cfg, workdir)`.

Read top to bottom: the pieces, then the loop. The hot path is functional: the Flax model is split
once into a static graph and a params pytree, and `lax.scan` runs the jitted step over all the steps
between two log/checkpoint points, with the state donated, so Python dispatches once per segment.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sweeper import checkpoint, config, data, model
from sweeper.writer import RunWriter, write_metrics

log = logging.getLogger(__name__)

EVAL_CHUNK = 5000  # images per evaluation call: bounds the float32 activations to ~60 MB


class TrainState(NamedTuple):
    """Everything that changes during training; a plain pytree, donated to each segment."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array


class DeviceData(NamedTuple):
    """Training images (uint8) and labels resident on the device, and the float32 mean image."""

    images: jax.Array
    labels: jax.Array
    mean_image: jax.Array


class DeviceSplits(NamedTuple):
    """A dataset on the device: training data, and (images, labels) of the val and test splits."""

    train: DeviceData
    val: tuple[jax.Array, jax.Array]
    test: tuple[jax.Array, jax.Array]


def to_device(dataset: data.Dataset) -> DeviceSplits:
    """Copy a loaded dataset to the default device, once per process."""
    return DeviceSplits(
        DeviceData(
            jnp.asarray(dataset.train_images),
            jnp.asarray(dataset.train_labels),
            jnp.asarray(dataset.mean_image),
        ),
        (jnp.asarray(dataset.val_images), jnp.asarray(dataset.val_labels)),
        (jnp.asarray(dataset.test_images), jnp.asarray(dataset.test_labels)),
    )


def enable_compilation_cache(directory: str | Path) -> None:
    """Keep every compiled program in `directory`, so that later runs (each job of a sweep) reuse it."""
    jax.config.update("jax_compilation_cache_dir", str(Path(directory).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # small programs count too


def optimizer_factory(opt: Any) -> Callable[..., optax.GradientTransformation]:
    """`learning_rate -> optax optimizer` for the optimizer config `opt` (sgd, momentum or adam)."""
    if opt.name == "sgd":
        return lambda learning_rate: optax.sgd(learning_rate)
    if opt.name == "momentum":
        return lambda learning_rate: optax.sgd(learning_rate, momentum=opt.momentum, nesterov=opt.nesterov)
    if opt.name == "adam":
        return lambda learning_rate: optax.adam(learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    raise config.ConfigError(f"optimizer.name must be sgd, momentum or adam, got {opt.name!r}")


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """The optax optimizer that `cfg.optimizer` names, at learning rate `cfg.lr`."""
    return optimizer_factory(cfg.optimizer)(cfg.lr)


def preprocess(images: jax.Array, mean_image: jax.Array) -> jax.Array:
    """uint8 pixels to float32 on the 0..255 scale minus the training mean image: the article's only step."""
    return images.astype(jnp.float32) - mean_image


def loss_fn(
    params: nnx.State, graphdef: nnx.GraphDef, x: jax.Array, labels: jax.Array, reg: float
) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy + reg * sum(W^2)/2 over the weight matrices; returns (loss, logits)."""
    logits = nnx.merge(graphdef, params)(x)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return cross_entropy + reg * model.l2_penalty(params), logits


def gradient_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    params: nnx.State,
    opt_state: optax.OptState,
    batch_idx: jax.Array,
    data: DeviceData,
    reg: float | jax.Array,
    mask_updates: Callable[[Any], Any] | None = None,
) -> tuple[nnx.State, optax.OptState, jax.Array, jax.Array]:
    """One optimizer step on the batch `batch_idx`: (params, opt_state, loss, batch accuracy), the loss
    and accuracy measured before the update. `mask_updates` may zero parts of the update."""
    x = preprocess(data.images[batch_idx], data.mean_image)
    labels = data.labels[batch_idx]
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, graphdef, x, labels, reg)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    if mask_updates is not None:
        updates = mask_updates(updates)
    params = optax.apply_updates(params, updates)
    return params, opt_state, loss, jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def make_train_segment(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, reg: float):
    """A jitted `segment(state, data, batch_indices) -> (state, (losses, accuracies))`.

    Each row of `batch_indices` is one step's batch; the loss and accuracy of each step are measured
    on its batch before its update, as the article's log lines are.
    """

    def train_step(state: TrainState, batch_idx: jax.Array, data: DeviceData):
        params, opt_state, loss, accuracy = gradient_step(
            graphdef, optimizer, state.params, state.opt_state, batch_idx, data, reg
        )
        return TrainState(params, opt_state, state.step + 1), (loss, accuracy)

    def segment(state: TrainState, data: DeviceData, batch_indices: jax.Array):
        return jax.lax.scan(functools.partial(train_step, data=data), state, batch_indices)

    return CompiledSegments(jax.jit(segment, donate_argnums=0))


class CompiledSegments:
    """A jitted segment compiled ahead of time, once per set of argument shapes (segment length, group
    size), and timed: compile time apart from training time, and when the first step ended."""

    def __init__(self, jitted: Any):
        self.jitted, self.programs = jitted, {}
        self.compile_s = self.train_s = 0.0
        self.first_step_done: float | None = None  # time.perf_counter() at the end of the first step

    def __call__(self, *args: Any, steps: int) -> tuple[Any, Any]:
        """Run one segment of `steps` steps and wait for it: (state, outputs as numpy)."""
        started, compile_before = time.perf_counter(), self.compile_s
        shapes = tuple(np.shape(leaf) for leaf in jax.tree.leaves(args))
        if shapes not in self.programs:
            self.programs[shapes] = self.jitted.lower(*args).compile()
            self.compile_s += time.perf_counter() - started
        state, outputs = self.programs[shapes](*args)
        outputs = jax.device_get(outputs)  # waits for the segment to finish
        segment_s = time.perf_counter() - started - (self.compile_s - compile_before)
        self.train_s += segment_s
        if self.first_step_done is None:  # start-up ends with the first step, not the whole segment
            self.first_step_done = time.perf_counter() - segment_s * (steps - 1) / steps
        return state, outputs


@functools.partial(jax.jit, static_argnums=0)
def predict(graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, mean_image: jax.Array):
    """Logits for a batch of uint8 images."""
    return nnx.merge(graphdef, params)(preprocess(images, mean_image))


def accuracy(
    graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, labels: jax.Array, mean_image: jax.Array
) -> float:
    """Fraction of `images` classified correctly."""
    return int(count_correct(graphdef, params, images, labels, mean_image)) / len(images)


@functools.partial(jax.jit, static_argnums=0)
def count_correct(
    graphdef: nnx.GraphDef, params: nnx.State, images: jax.Array, labels: jax.Array, mean_image: jax.Array
) -> jax.Array:
    """How many `images` are classified correctly, in chunks of EVAL_CHUNK inside one compiled loop.

    The last chunk is slid back to end at the last image and its already-counted rows masked out, so
    every chunk has one static shape and nothing is padded or copied.
    """
    n = images.shape[0]
    chunk = min(EVAL_CHUNK, n)

    def count(i, correct):
        start = i * chunk
        begin = jnp.minimum(start, n - chunk)
        x = jax.lax.dynamic_slice_in_dim(images, begin, chunk)
        y = jax.lax.dynamic_slice_in_dim(labels, begin, chunk)
        hits = jnp.argmax(predict(graphdef, params, x, mean_image), axis=-1) == y
        fresh = begin + jnp.arange(chunk) >= start
        return correct + jnp.sum(hits & fresh)

    return jax.lax.fori_loop(0, -(-n // chunk), count, 0)


class BatchOrder:
    """Which images each step trains on: per epoch a seeded permutation, cut into consecutive batches.

    Every image is used once per epoch (a remainder smaller than a batch is skipped, as the article's
    batch generator does). Batches depend only on (seed words, step), so a resumed run sees the same
    ones. The permutations are numpy's: JAX's would compile a sort at start-up for no gain.
    """

    def __init__(self, seed_words: np.ndarray, num_images: int, batch_size: int):
        self.seed_words = [int(w) for w in np.asarray(seed_words).ravel()]
        self.num_images, self.batch_size = num_images, batch_size
        self.steps_per_epoch = num_images // batch_size

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a segment spans at most two epochs
    def epoch_batches(self, epoch: int) -> np.ndarray:
        """(steps_per_epoch, batch_size) image indices of one epoch."""
        perm = np.random.default_rng([*self.seed_words, epoch]).permutation(self.num_images)
        used = self.steps_per_epoch * self.batch_size
        return perm[:used].reshape(self.steps_per_epoch, self.batch_size).astype(np.int32)

    def indices(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, batch_size) image indices for steps start..stop-1."""
        spe = self.steps_per_epoch
        return np.stack([self.epoch_batches(step // spe)[step % spe] for step in range(start, stop)])

    def state(self, step: int) -> dict[str, Any]:
        """Where in the data order `step` is, for the checkpoint."""
        return {
            "seed_words": self.seed_words,
            "num_images": self.num_images,
            "batch_size": self.batch_size,
            "epoch": step // self.steps_per_epoch,
            "batch_in_epoch": step % self.steps_per_epoch,
        }


@functools.partial(jax.jit, static_argnums=0)
def init_run(hidden: int, seed: int | jax.Array) -> tuple[nnx.State, jax.Array]:
    """(initial params, data-order seed words), both derived from the one root key `seed`."""
    init_key, order_key = jax.random.split(jax.random.key(seed))
    return model.init_params(hidden, init_key), jax.random.key_data(order_key)


def segment_ends(start: int, cfg: Any) -> list[int]:
    """The steps after which the loop stops to log or checkpoint: one compiled scan per segment."""
    stops = {cfg.max_steps}
    stops |= set(range(cfg.log_every, cfg.max_steps, cfg.log_every))
    stops |= set(range(cfg.checkpoint_every, cfg.max_steps, cfg.checkpoint_every))
    return sorted(s for s in stops if s > start)


def objective(metrics: dict[str, Any]) -> float:
    """What a sweep maximises: val accuracy (test accuracy without a val split), 0 if diverged."""
    value = metrics["val_accuracy"] if metrics["val_accuracy"] is not None else metrics["test_accuracy"]
    return float(value) if value is not None and math.isfinite(value) else 0.0


def resume(
    ckpt_dir: Path, params: nnx.State, opt_state: Any, order: BatchOrder, logger: logging.Logger = log
) -> tuple[Any, Any, int]:
    """(params, opt_state, step) from the latest checkpoint in `ckpt_dir`, or the given ones at step 0.

    Refuses a checkpoint whose model, optimizer or data order differs from the configured run's.
    """
    path = checkpoint.latest(ckpt_dir)
    if path is None:
        logger.info("no checkpoint to resume from in %s: starting at step 0", ckpt_dir)
        return params, opt_state, 0
    payload = checkpoint.load(path)
    params = checkpoint.restore_params(payload, params, path)
    opt_state = checkpoint.restore_opt_state(payload, opt_state, path)
    saved_order = {k: payload["data_order"].get(k) for k in ("seed_words", "num_images", "batch_size")}
    expected = {k: v for k, v in order.state(0).items() if k in saved_order}
    if saved_order != expected:
        raise checkpoint.CheckpointError(
            f"{path} was written with another seed, batch_size or training set (data order "
            f"{saved_order}, config gives {expected}); resuming would not continue the same run"
        )
    logger.info("resumed from %s (step %d)", path, payload["step"])
    return params, opt_state, payload["step"]


def show_progress(cfg: Any) -> bool:
    """Whether to draw a progress bar: `cfg.progress`, or when unset, whether stderr is a terminal."""
    return cfg.progress if cfg.progress is not None else sys.stderr.isatty()


def train_and_evaluate(cfg: DictConfig | Any, workdir: str | Path) -> dict[str, Any]:
    """Train as `cfg` says, writing tb/, checkpoints/ and metrics.json into `workdir`; return the metrics."""
    started = time.perf_counter()
    config.validate(cfg)
    workdir = Path(workdir)
    cfg_dict = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True, enum_to_str=True)
    hparams = config.hyperparameters(cfg_dict)
    log_config(log, hparams)

    dataset = data.load(cfg.data)
    data_s = time.perf_counter() - started
    if cfg.batch_size > len(dataset.train_images):  # the config check assumed the official sizes
        raise config.ConfigError(
            f"batch_size must be <= the training-set size {len(dataset.train_images)}, got {cfg.batch_size}"
        )
    graphdef, _ = model.abstract(cfg.hidden)
    params, order_seed = init_run(cfg.hidden, cfg.seed)
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(params)
    order = BatchOrder(order_seed, len(dataset.train_images), cfg.batch_size)

    ckpt_dir = workdir / "checkpoints"
    start = 0
    if cfg.resume:
        params, opt_state, start = resume(ckpt_dir, params, opt_state, order)

    train, (val_images, val_labels), (test_images, test_labels) = to_device(dataset)
    state = TrainState(params, opt_state, np.int32(start))
    segment = make_train_segment(graphdef, optimizer, cfg.reg)
    has_val = len(val_images) > 0

    def evaluate(images, labels) -> float:
        return accuracy(graphdef, state.params, images, labels, train.mean_image)

    writer = RunWriter(workdir / "tb", purge_step=start)
    status, step, last_losses = "ok", start, None
    try:
        with (
            logging_redirect_tqdm(),
            tqdm(
                total=cfg.max_steps, initial=start, unit="step", disable=not show_progress(cfg), leave=False
            ) as bar,
        ):
            for stop in segment_ends(start, cfg):
                batch_indices = order.indices(step, stop)
                logging_now = step % cfg.log_every == 0
                if logging_now:  # measured before this step's update, as the article does
                    val_accuracy = evaluate(val_images, val_labels) if has_val else None
                    if cfg.histograms:
                        logits = predict(
                            graphdef, state.params, dataset.train_images[batch_indices[0]], train.mean_image
                        )
                        writer.histograms(step, {"logits": logits, **weight_tensors(state.params)})
                state, (last_losses, accuracies) = segment(state, train, batch_indices, steps=stop - step)
                if logging_now:
                    loss, train_accuracy = float(last_losses[0]), float(accuracies[0])
                    writer.scalars(
                        step, {"loss": loss, "train_accuracy": train_accuracy, "val_accuracy": val_accuracy}
                    )
                    log_step(log, step, loss, train_accuracy, val_accuracy)
                bar.update(stop - step)
                step = stop
                if not np.isfinite(last_losses).all():
                    status = "diverged"
                    log.warning("loss is not finite by step %d: stopping, status diverged", step)
                    break
                if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                    path = checkpoint.save(
                        ckpt_dir,
                        step=step,
                        params=state.params,
                        opt_state=state.opt_state,
                        mean_image=train.mean_image,
                        data_order=order.state(step),
                        config=cfg_dict,
                    )
                    log.info("saved checkpoint %s", path)

        accuracies = None
        if status == "ok":
            accuracies = (
                evaluate(train.images, train.labels),
                evaluate(val_images, val_labels) if has_val else None,
                evaluate(test_images, test_labels),
            )
        metrics = final_metrics(status, step, last_losses, accuracies)
        metrics["wall_time_s"] = round(time.perf_counter() - started, 3)
        metrics["objective"] = objective(metrics)
        metrics["timings"] = timings(data_s, segment, started, step - start)
        finish(workdir, writer, hparams, metrics, log)
    finally:
        writer.close()
    return metrics


def log_config(logger: logging.Logger, hparams: dict[str, Any]) -> None:
    """The run's first log line: every hyperparameter."""
    logger.info("config: %s", " ".join(f"{k}={v}" for k, v in hparams.items()))


def log_step(
    logger: logging.Logger, step: int, loss: float, train_accuracy: float, val_accuracy: float | None
) -> None:
    """One log point, in the article's words: the step's loss and batch accuracy, before its update."""
    val = f"  val_accuracy {val_accuracy:.4f}" if val_accuracy is not None else ""
    logger.info("step %d  loss %.4f  train_accuracy %.4f%s", step, loss, train_accuracy, val)


def weight_tensors(params: nnx.State) -> dict[str, jax.Array]:
    """The parameters by TensorBoard tag (`weights/hidden/kernel`, ...), for histograms."""
    pure = nnx.to_pure_dict(params)
    return {
        f"weights/{layer}/{name}": value for layer, leaves in pure.items() for name, value in leaves.items()
    }


def final_metrics(
    status: str, step: int, last_losses: np.ndarray | None, accuracies: tuple | None
) -> dict[str, Any]:
    """metrics.json content. `accuracies` is (train, val, test), None when the run diverged (its
    parameters are not finite), val None without a validation split."""
    loss = float(np.mean(last_losses)) if last_losses is not None else None
    train_accuracy, val_accuracy, test_accuracy = accuracies or (None, None, None)
    return {
        "status": status,
        "steps": step,
        "loss": loss if loss is not None and math.isfinite(loss) else None,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "test_accuracy": test_accuracy,
    }


def timings(data_s: float, segment: CompiledSegments, started: float, steps: int) -> dict:
    """Where a run's time went (metrics.json `timings`), for a run that began at `started`
    (time.perf_counter()) and ran `steps` steps through `segment`."""
    first_step_s = segment.first_step_done - started if segment.first_step_done is not None else 0.0
    return {
        "data_s": round(data_s, 3),
        "compile_s": round(segment.compile_s, 3),
        "first_step_s": round(first_step_s, 3),
        "train_s": round(segment.train_s, 3),
        "steps_run": steps,
        "steps_per_s": round(steps / segment.train_s, 1) if segment.train_s > 0 else None,
    }


def finish(
    workdir: Path, writer: RunWriter, hparams: dict, metrics: dict[str, Any], logger: logging.Logger
) -> None:
    """Close a run's record: final val/test scalars (HParams shows each tag's last value), its HParams
    session with its status, metrics.json, and the closing log lines."""
    writer.scalars(metrics["steps"], {k: metrics[k] for k in ("val_accuracy", "test_accuracy")})
    writer.hparams(hparams, status=metrics["status"])
    write_metrics(workdir, metrics)
    if metrics["test_accuracy"] is not None:
        logger.info("test accuracy %.4f", metrics["test_accuracy"])
    t = metrics["timings"]
    logger.info(
        "status %s, total time %.1f s (data %.1f s, compile %.1f s, %d steps in %.1f s)",
        metrics["status"],
        metrics["wall_time_s"],
        t["data_s"],
        t["compile_s"],
        t["steps_run"],
        t["train_s"],
    )


def evaluate_checkpoint(cfg: Any, path: str | Path) -> dict[str, Any]:
    """The article's `restore_model.py`: rebuild a checkpoint's model and report its test accuracy."""
    path = checkpoint.resolve(path)
    payload = checkpoint.load(path)
    hidden = model.hidden_size(payload["params"])
    graphdef, template = model.abstract(hidden)
    params = checkpoint.restore_params(payload, template, path)
    dataset = data.load(cfg.data)
    test_accuracy = accuracy(
        graphdef, params, dataset.test_images, dataset.test_labels, payload["mean_image"]
    )
    log.info("restored %s: step %d, hidden %d", path, payload["step"], hidden)
    log.info("test accuracy %.4f", test_accuracy)
    return {"step": payload["step"], "hidden": hidden, "test_accuracy": test_accuracy}

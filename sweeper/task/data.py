"""Datasets: the one place that knows the sources (CIFAR-10, synthetic, a user's .npz or loader
function), the validation split, the input statistics preprocessing needs, and the batch order.
numpy only, no JAX.

Every source gives arrays x (N, ...) of any numeric dtype and integer labels y (N,). They stay in their
own dtype (CIFAR-10: uint8 (N, 3072) in R-plane, G-plane, B-plane order, as the official files store
them); `data.preprocess` is applied on the device, inside the step (sweeper.task.train_step).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.config import PREPROCESS, ConfigError
from sweeper.task import arrays, cifar10
from sweeper.task.cifar10 import IMAGE_SIZE, NUM_CLASSES
from sweeper.task.errors import DataError

__all__ = ["IMAGE_SIZE", "NUM_CLASSES", "DataError", "Dataset", "Info", "describe", "load"]

IMAGE_SHAPE = (32, 32, 3)  # data.layout=image: height, width, channels
EVAL_CHUNK = 5000  # examples per evaluation call (sweeper.task.train_step): bounds its activations
# Synthetic class patterns swing +-16 around grey under noise of stddev 64: learnable, not trivial
# (the default MLP reaches ~70 % test accuracy in 300 steps, chance is 10 %).
PATTERN_AMPLITUDE = 16.0
CIFAR10_TRAIN_SIZE, CIFAR10_TEST_SIZE = 50_000, 10_000
SPLIT_ARRAYS = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class Info:
    """What the rest of sweeper needs to know of a dataset: split sizes, one example's shape and dtype,
    the number of classes; and, once loaded, a fingerprint of what the model sees (checkpoints keep it)."""

    num_train: int
    num_val: int
    num_test: int
    input_shape: tuple[int, ...]
    dtype: str
    num_classes: int
    fingerprint: str | None = None

    @property
    def model_shape(self) -> tuple[tuple[int, ...], int]:
        """(input_shape, num_classes): what a model is built for."""
        return self.input_shape, self.num_classes

    @property
    def input_size(self) -> int:
        """Values per example."""
        return int(np.prod(self.input_shape))


@dataclass(frozen=True)
class Dataset:
    """Inputs (N, ...) in their own dtype and int32 labels per split; the training split's per-value
    mean (float32) and, for data.preprocess=standardize, 1/std, which the step applies on the device
    (None where the preprocessing does not use them)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    mean_image: np.ndarray | None
    scale: np.ndarray | None = None
    num_classes: int = NUM_CLASSES
    preprocess: str = "center"

    @functools.cached_property
    def info(self) -> Info:
        """Its sizes, shapes and classes, with the fingerprint of its arrays and preprocessing."""
        return Info(
            len(self.train_labels),
            len(self.val_labels),
            len(self.test_labels),
            tuple(self.train_images.shape[1:]),
            str(self.train_images.dtype),
            self.num_classes,
            self._fingerprint(),
        )

    def _fingerprint(self) -> str:
        # CRC-32 of each array: a change detector (not a signature) that reads CIFAR-10 in ~0.1 s.
        digest = hashlib.sha256(self.preprocess.encode())
        for name in SPLIT_ARRAYS:
            array = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}{array.shape}{array.dtype}{zlib.crc32(array.data)}".encode())
        return digest.hexdigest()[:16]


def _option(data_cfg: Any, key: str, default: Any) -> Any:
    return data_cfg.get(key, default) if hasattr(data_cfg, "get") else getattr(data_cfg, key, default)


def _shape(data_cfg: Any) -> tuple[int, ...]:
    """One CIFAR-shaped example's shape in the configured layout."""
    return IMAGE_SHAPE if _option(data_cfg, "layout", "flat") == "image" else (IMAGE_SIZE,)


def _held_out(data_cfg: Any, total: int) -> int:
    if not 0 <= data_cfg.val_size < total:
        raise ConfigError(
            f"data.val_size must be in [0, {total}) (the training examples), got {data_cfg.val_size}"
        )
    return data_cfg.val_size


class Cifar10:
    """The official CIFAR-10 (sweeper.task.cifar10): its sizes are known before loading."""

    @staticmethod
    def load(data_cfg: Any) -> tuple:
        return (*cifar10.load(data_cfg), None)

    @staticmethod
    def describe(data_cfg: Any) -> Info:
        val = _held_out(data_cfg, CIFAR10_TRAIN_SIZE)
        return Info(CIFAR10_TRAIN_SIZE - val, val, CIFAR10_TEST_SIZE, _shape(data_cfg), "uint8", NUM_CLASSES)


class Synthetic:
    """Generated CIFAR-shaped data (make_synthetic): its sizes are its config's."""

    @staticmethod
    def load(data_cfg: Any) -> tuple:
        return (*make_synthetic(data_cfg), None)

    @staticmethod
    def describe(data_cfg: Any) -> Info:
        val = _held_out(data_cfg, data_cfg.train_size)
        sizes = (data_cfg.train_size - val, val, data_cfg.test_size)
        return Info(*sizes, _shape(data_cfg), "uint8", NUM_CLASSES)


class UserArrays:
    """A user's arrays (sweeper.task.arrays): an .npz file (data=npz) or a loader function (data=loader),
    checked when loaded; their sizes are known only then."""

    @staticmethod
    def load(data_cfg: Any) -> tuple:
        if data_cfg.name == "npz":
            from hydra.utils import to_absolute_path  # the folder the command ran in, whatever Hydra's chdir

            path = to_absolute_path(str(data_cfg.path))
            found, source = arrays.load_npz(path), f"data.path={path}"
        else:
            target = str(_option(data_cfg, "_target_", "") or "")
            kwargs = {k: v for k, v in _items(data_cfg) if k not in LOADER_KEYS}
            found, source = arrays.call_loader(target, kwargs), f"data._target_={target}"
        arrays.check_arrays(found, source)
        val = (found["x_val"], found["y_val"]) if "x_val" in found else None
        labels = [np.asarray(found[k], dtype=np.int32) for k in ("y_train", "y_test")]
        return found["x_train"], labels[0], found["x_test"], labels[1], _int_labels(val)

    @staticmethod
    def describe(data_cfg: Any) -> Info:
        return load(data_cfg).info


# Keys of data=loader that are sweeper's; the others are the loader function's arguments.
LOADER_KEYS = ("name", "_target_", "val_size", "preprocess")
SOURCES = {"cifar10": Cifar10, "synthetic": Synthetic, "npz": UserArrays, "loader": UserArrays}


def _items(data_cfg: Any) -> list[tuple[str, Any]]:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(data_cfg):
        return list(OmegaConf.to_container(data_cfg, resolve=True).items())
    return list(vars(data_cfg).items())


def _int_labels(val: tuple | None) -> tuple | None:
    return None if val is None else (val[0], np.asarray(val[1], dtype=np.int32))


def _source(name: str) -> Any:
    if name not in SOURCES:
        raise DataError(f"data.name must be one of {', '.join(SOURCES)}, got {name!r}")
    return SOURCES[name]


_loaded: dict[str, Dataset] = {}  # the last dataset loaded: checks and training share one load


def load(data_cfg: Any) -> Dataset:
    """The dataset that `data_cfg` names, checked, split, laid out, with its preprocessing statistics
    (the last one is kept: loading it again for the same config costs nothing)."""
    key = _load_key(data_cfg)
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = _load(data_cfg)
    return _loaded[key]


def _load_key(data_cfg: Any) -> str:
    """A dataset's cache key: its config, and for a file, its size and time (a file rewritten is new)."""
    key = repr(_items(data_cfg))
    if data_cfg.name == "npz":
        import os

        from hydra.utils import to_absolute_path

        with contextlib.suppress(OSError):
            stat = os.stat(to_absolute_path(str(data_cfg.path)))
            key += f"{stat.st_size}:{stat.st_mtime_ns}"
    return key


def _load(data_cfg: Any) -> Dataset:
    train_x, train_y, test_x, test_y, val = _source(data_cfg.name).load(data_cfg)
    if _option(data_cfg, "layout", "flat") == "image":
        train_x, test_x = as_images(train_x), as_images(test_x)
    preprocess = _option(data_cfg, "preprocess", "center")
    num_classes = int(train_y.max()) + 1 if SOURCES[data_cfg.name] is UserArrays else NUM_CLASSES
    return split(train_x, train_y, test_x, test_y, data_cfg.val_size, val, preprocess, num_classes)


_described: dict[str, Info] = {}


def describe(data_cfg: Any) -> Info:
    """The dataset's Info without training anything: from the config where the source's sizes are known
    (CIFAR-10, synthetic; no fingerprint), else by loading and checking it once per process."""
    key = _load_key(data_cfg)
    if key not in _described:
        _described[key] = _source(data_cfg.name).describe(data_cfg)
    return _described[key]


def as_images(x: np.ndarray) -> np.ndarray:
    """CIFAR-10's planar (N, 3072) rows as (N, 32, 32, 3) height-width-channel images."""
    return np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def split(
    train_x,
    train_y,
    test_x,
    test_y,
    val_size: int,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    preprocess: str = "center",
    num_classes: int = NUM_CLASSES,
) -> Dataset:
    """Hold out the last `val_size` training examples (official order) for validation, unless the source
    gave its own `val` split; compute what `preprocess` needs from the training split."""
    if val is not None and val_size:
        raise DataError(
            f"data.val_size={val_size} holds out training examples, but the data has its own x_val: "
            "set data.val_size=0 to use it"
        )
    n_train = len(train_x) - (val_size if val is None else 0)
    if not 0 <= val_size < len(train_x):
        raise DataError(f"data.val_size={val_size} leaves no training examples of {len(train_x)}")
    val_x, val_y = val if val is not None else (train_x[n_train:], train_y[n_train:])
    train_x, train_y = train_x[:n_train], train_y[:n_train]
    mean, scale = statistics(train_x, preprocess)
    return Dataset(train_x, train_y, val_x, val_y, test_x, test_y, mean, scale, num_classes, preprocess)


def statistics(train_x: np.ndarray, preprocess: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, 1/std) per input value of the training split, float32, as `preprocess` needs them."""
    if preprocess not in PREPROCESS:
        raise DataError(f"data.preprocess must be one of {', '.join(PREPROCESS)}, got {preprocess!r}")
    if preprocess == "none":
        return None, None
    # Exact for uint8: integer sums stay below 2**24 for up to 65,000 images, so float32 loses nothing.
    mean = train_x.mean(axis=0, dtype=np.float32)
    if preprocess == "center":
        return mean, None
    std = train_x.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0).astype(np.float32)


class BatchOrder:
    """Which images each step trains on: per epoch a seeded permutation, cut into consecutive batches.

    Every image is used once per epoch (a remainder smaller than a batch is skipped, as the article's
    batch generator does). Batches depend only on (seed words, step), so a resumed run sees the same
    ones. The permutations are numpy's: JAX's would compile a sort at start-up for no gain.
    """

    def __init__(self, seed_words: Any, num_images: int, batch_size: int):
        self.seed_words = [int(w) for w in np.asarray(seed_words).ravel()]
        self.num_images, self.batch_size = num_images, batch_size
        self.steps_per_epoch = num_images // batch_size
        self._epochs: dict[int, np.ndarray] = {}  # the last two epochs: a segment spans at most two

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """(steps_per_epoch, batch_size) image indices of one epoch."""
        if epoch not in self._epochs:
            perm = np.random.default_rng([*self.seed_words, epoch]).permutation(self.num_images)
            used = self.steps_per_epoch * self.batch_size
            self._epochs = {e: b for e, b in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = perm[:used].reshape(self.steps_per_epoch, self.batch_size).astype(np.int32)
        return self._epochs[epoch]

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


# --- synthetic ------------------------------------------------------------------------------------------


def make_synthetic(data_cfg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Learnable CIFAR-shaped data: per class a smooth random 8x8 colour pattern, upsampled, plus noise."""
    rng = np.random.default_rng(data_cfg.seed)
    coarse = rng.uniform(-1.0, 1.0, size=(NUM_CLASSES, 3, 8, 8)).astype(np.float32)
    patterns = 128.0 + PATTERN_AMPLITUDE * coarse.repeat(4, axis=2).repeat(4, axis=3).reshape(
        NUM_CLASSES, IMAGE_SIZE
    )

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, NUM_CLASSES, size=n).astype(np.int32)
        noise = rng.standard_normal((n, IMAGE_SIZE), dtype=np.float32) * np.float32(data_cfg.noise)
        images = np.clip(patterns[labels] + noise, 0, 255).round().astype(np.uint8)
        return images, labels

    train_x, train_y = draw(data_cfg.train_size)
    test_x, test_y = draw(data_cfg.test_size)
    return train_x, train_y, test_x, test_y

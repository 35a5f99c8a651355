"""Any Flax NNX module as the model a run trains: the one place that builds it from the `model` config.

    model:                          # conf/model/<name>.yaml, yours or sweeper's (mlp: the article's)
      _target_: my_models.ConvNet   # an nnx.Module class, found on PYTHONPATH
      channels: 16                  # its constructor's keys

sweeper calls `ConvNet(channels=16, input_shape=..., num_classes=..., rngs=nnx.Rngs(params=...,
dropout=..., default=...))` itself (hydra.utils.get_class, no recursive instantiation), every stream
derived from `seed`. A run's model state is the module's whole nnx.State: its Params, and whatever else it
keeps (BatchNorm's BatchStat, Dropout's RNG count and key; keys are held as raw key data so that the
state stacks, copies and pickles as plain arrays).

A parameter axis may be marked paddable by the module, as Flax names axes for sharding: one entry per
axis, `nnx.Param(value, paddable=("hidden", None))` says that axis 0's size is the model key `hidden`
(the MLP's hidden units) and axis 1 is not paddable. Configs that differ only in such keys can
share one program, narrower ones zero-padded and masked (exact when padded units are inert: nothing
normalises over the padded axis).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import hydra.utils
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from sweeper.config import ConfigError
from sweeper.task import data

RESERVED = ("input_shape", "num_classes", "rngs")  # what sweeper passes to every model's constructor
PADDABLE = "paddable"  # a Variable's metadata: per axis, the model key that sizes it (or None)
STREAMS = ("params", "dropout", "default")  # the nnx.Rngs streams a model gets, each from `seed`


@dataclass(frozen=True)
class Spec:
    """What a model is built from: its class path and keys (sorted (key, value) pairs), the shape and
    dtype of one input as it reaches the model, and the number of classes. Hashable: built once."""

    target: str
    keys: tuple[tuple[str, Any], ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    num_classes: int

    @property
    def name(self) -> str:
        return self.target.rsplit(".", 1)[-1]

    def with_keys(self, **changes: Any) -> Spec:
        """The same model with some keys changed (a program's widths)."""
        keys = dict(self.keys) | changes
        return Spec(
            self.target, tuple(sorted(keys.items())), self.input_shape, self.input_dtype, self.num_classes
        )


def model_keys(model_cfg: Any) -> dict[str, Any]:
    """The constructor keys of `model_cfg` (everything but `_target_`), resolved; a reserved name refused."""
    keys = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else model_cfg
    keys = {k: v for k, v in dict(keys).items() if k != "_target_"}
    for key in keys:
        if key in RESERVED:
            raise ConfigError(
                f"model.{key} is a reserved name: sweeper passes input_shape, num_classes and rngs to "
                "the model itself; rename the key"
            )
    return keys


def spec_of(model_cfg: Any, info: data.Info, preprocess: str = "center") -> Spec:
    """The Spec of `model_cfg` on data `info`, its inputs preprocessed by `preprocess` (data.preprocess:
    floats, or with `none` the data's own dtype)."""
    target = model_cfg.get("_target_") if model_cfg is not None else None
    if not target:
        raise ConfigError("model._target_ must name an nnx.Module class (package.module.Class), got nothing")
    keys = model_keys(model_cfg)
    dtype = info.dtype if preprocess == "none" else "float32"
    frozen = tuple(sorted((k, hashable(v)) for k, v in keys.items()))
    return Spec(str(target), frozen, tuple(info.input_shape), str(dtype), int(info.num_classes))


def of_config(cfg: Any, info: data.Info | None = None) -> Spec:
    """The Spec of a run's config `cfg` (its model on its data; `info`: the data's, else described)."""
    info = info or data.describe(cfg.data)
    return spec_of(cfg.model, info, cfg.data.get("preprocess", "center"))


def hashable(value: Any) -> Any:
    """A model key's value as a Spec holds it (lists and dicts as JSON)."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _unhashable(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@functools.lru_cache(maxsize=64)
def model_class(target: str) -> type:
    """The nnx.Module class `target` names; ConfigError in one line where it cannot be."""
    try:
        cls = hydra.utils.get_class(target)
    except Exception as error:  # Hydra wraps the ImportError; its first line says what is missing
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model._target_ {target!r} cannot be imported ({reason}): is the folder of its module on "
            "PYTHONPATH (e.g. PYTHONPATH=. python run.py ...)?"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nnx.Module)):
        raise ConfigError(f"model._target_ {target!r} is not a flax.nnx.Module class")
    return cls


def make_rngs(key: jax.Array) -> nnx.Rngs:
    """The model's random streams: `params` is `key` itself (the article's initialisation), `dropout`
    and `default` folded from it."""
    return nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1), default=jax.random.fold_in(key, 2))


def build(spec: Spec, key: jax.Array) -> nnx.Module:
    """The module `spec` describes, initialised from `key`."""
    cls = model_class(spec.target)
    keys = {k: _unhashable(v) for k, v in spec.keys}
    try:
        return cls(**keys, input_shape=spec.input_shape, num_classes=spec.num_classes, rngs=make_rngs(key))
    except TypeError as error:
        if "argument" not in str(error):
            raise
        raise ConfigError(
            f"model: {spec.name}({', '.join(f'{k}={v!r}' for k, v in keys.items())}, input_shape, "
            f"num_classes, rngs) was refused: {error}"
        ) from None


def is_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def keys_to_data(tree: Any) -> Any:
    """`tree` with typed PRNG keys as their raw key data (plain uint32 arrays)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_key(x) else x, tree)


def data_to_keys(state: nnx.State) -> nnx.State:
    """A model state (as `keys_to_data` left it) with its RngKey variables typed keys again."""
    rng_keys, rest = nnx.split_state(state, nnx.RngKey, ...)
    return nnx.merge_state(jax.tree.map(jax.random.wrap_key_data, rng_keys), rest)


def init_state(spec: Spec, key: jax.Array) -> nnx.State:
    """A freshly initialised model state (keys as key data); call it under `jax.jit`: eagerly, every random
    op would compile on its own."""
    return keys_to_data(nnx.state(build(spec, key)))


class Abstract:
    """A model's graph (for training, and for evaluation: `.eval()`, where Dropout and BatchNorm switch),
    the shapes of its state, and what of it is paddable: built once per Spec, nothing computed."""

    def __init__(self, spec: Spec):
        self.spec = spec
        module = nnx.eval_shape(lambda: build(spec, jax.random.key(0)))
        self.graphdef, state = nnx.split(module)
        self.state = jax.eval_shape(keys_to_data, state)
        module.eval()
        self.eval_graphdef = nnx.split(module)[0]
        self.padding = Padding.of(state, spec)
        self._check_output()
        self._check_padding_complete()

    def _check_output(self) -> None:
        x = jax.ShapeDtypeStruct((2, *self.spec.input_shape), jnp.dtype(self.spec.input_dtype))
        try:
            out = jax.eval_shape(
                lambda s, x: nnx.merge(self.eval_graphdef, data_to_keys(s))(x), self.state, x
            )
        except Exception as error:
            line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                f"model: {self.spec.name} fails on a batch shaped (2, *input_shape) = {x.shape}: {line}"
            ) from None
        want = (2, self.spec.num_classes)
        if getattr(out, "shape", None) != want:
            raise ConfigError(
                f"model: {self.spec.name} returns {getattr(out, 'shape', type(out).__name__)} for inputs "
                f"{x.shape}; it must return logits shaped (N, num_classes) = {want}"
            )

    def _check_padding_complete(self) -> None:
        """Every variable that a paddable key resizes must mark that axis: else a padded program could not
        stack members of different widths."""
        shapes = _shapes(self.state)
        for key in self.padding.keys:
            wider = self.spec.with_keys(**{key: dict(self.spec.keys)[key] + 1})
            module = nnx.eval_shape(functools.partial(build, wider, jax.random.key(0)))
            for path, shape in _shapes(jax.eval_shape(keys_to_data, nnx.state(module))).items():
                marked = {a for a, k in self.padding.axes.get(path, {}).items() if k == key}
                before = shapes.get(path, shape)
                changed = {a for a, (n, m) in enumerate(zip(before, shape, strict=False)) if n != m}
                if changed - marked:
                    raise ConfigError(
                        f"model: {'.'.join(path)} changes with model.{key} along axis "
                        f"{min(changed - marked)}, which it does not mark paddable: mark it "
                        f"(paddable=(..., {key!r}, ...)) wherever model.{key} sizes an axis"
                    )

    @functools.cached_property
    def convolutional(self) -> bool:
        """Whether its forward pass convolves (sweeper.task.train_step.SteppedSegment says why it matters)."""
        x = jax.ShapeDtypeStruct((2, *self.spec.input_shape), jnp.dtype(self.spec.input_dtype))
        forward = lambda s, x: nnx.merge(self.graphdef, data_to_keys(s))(x)  # noqa: E731
        return "conv_general_dilated" in str(jax.make_jaxpr(forward)(self.state, x))

    def bytes(self) -> tuple[int, int]:
        """(bytes of its Params, bytes of the rest of its state)."""
        params, rest = nnx.split_state(self.state, nnx.Param, ...)
        size = lambda tree: sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))  # noqa: E731
        return size(params), size(rest)


def _shapes(state: nnx.State) -> dict[tuple[str, ...], tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {path_names(path): tuple(np.shape(leaf)) for path, leaf in flat}


@functools.lru_cache(maxsize=64)
def abstract(spec: Spec) -> Abstract:
    """The Abstract of `spec`, built once per process."""
    return Abstract(spec)


def path_names(path: tuple) -> tuple[str, ...]:
    """A pytree path as plain names: `['layer1']['kernel'].value` -> (layer1, kernel)."""
    names = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                names.append(str(getattr(entry, attribute)))
                break
    return tuple(names[:-1] if names[-1:] == ["value"] else names)


@dataclass(frozen=True)
class Padding:
    """The paddable axes of a model's variables: {variable path: {axis: model key}}, and the keys."""

    axes: dict[tuple[str, ...], dict[int, str]]

    @classmethod
    def of(cls, state: nnx.State, spec: Spec) -> Padding:
        """Read the `paddable` metadata of `state`'s variables, checked against `spec`'s keys."""
        keys = dict(spec.keys)
        axes: dict[tuple[str, ...], dict[int, str]] = {}
        flat = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
        for path, variable in flat:
            marked = variable.get_metadata().get(PADDABLE) if isinstance(variable, nnx.Variable) else None
            if not marked:
                continue
            name = ".".join(path_names(path))
            if not isinstance(marked, tuple) or len(marked) != np.ndim(variable.get_value()):
                raise ConfigError(
                    f"model: {name} has paddable={marked!r}; it must be a tuple with an entry per axis "
                    f"({np.ndim(variable.get_value())}): the model key that sizes the axis, or None"
                )
            marked = {axis: key for axis, key in enumerate(marked) if key is not None}
            for axis, key in marked.items():
                size = np.shape(variable.get_value())[int(axis)]
                if not isinstance(keys.get(key), int) or keys[key] != size:
                    raise ConfigError(
                        f"model: {name} marks axis {axis} paddable by model.{key}, which must be the int "
                        f"key of that axis's size ({size}); the model's keys are {sorted(keys)}"
                    )
            axes[path_names(path)] = {int(a): str(k) for a, k in dict(marked).items()}
        return cls(axes)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(sorted({k for marked in self.axes.values() for k in marked.values()}))

    def axes_at(self, path: tuple) -> dict[int, str]:
        """The paddable axes of a leaf at `path` in a state-shaped tree (the model's state, its
        gradients, or an optimizer state that holds state-shaped trees: matched by the path's end)."""
        names = path_names(path)
        for start in range(len(names)):
            if names[start:] in self.axes:
                return self.axes[names[start:]]
        return {}

    def resize(self, tree: Any, widths: dict[str, int]) -> Any:
        """A state-shaped `tree` as numpy arrays, each paddable axis cut or zero-padded to `widths`.

        On the host on purpose: slicing on the device would compile a small program per leaf and shape.
        """
        if not self.axes:
            return tree

        def fix(path, leaf):
            leaf = np.asarray(leaf)
            for axis, key in self.axes_at(path).items():
                width = widths[key]
                if leaf.shape[axis] == width:
                    continue
                index = [slice(None)] * leaf.ndim
                index[axis] = slice(0, width)
                padding = [(0, 0)] * leaf.ndim
                padding[axis] = (0, max(width - leaf.shape[axis], 0))
                leaf = np.pad(leaf[tuple(index)], padding)
            return leaf

        return jax.tree_util.tree_map_with_path(fix, tree)

    def mask(self, tree: Any, masks: dict[str, jax.Array]) -> Any:
        """A state-shaped `tree` times each member's `masks[key]` (width,) along the axes sized by key:
        padding stays zero."""

        def fix(path, leaf):
            for axis, key in self.axes_at(path).items():
                shape = [1] * leaf.ndim
                shape[axis] = -1
                leaf = leaf * masks[key].reshape(shape)
            return leaf

        return jax.tree_util.tree_map_with_path(fix, tree)


def widths_of(spec: Spec) -> dict[str, int]:
    """The model's paddable keys and their values in `spec`."""
    keys = dict(spec.keys)
    return {key: int(keys[key]) for key in abstract(spec).padding.keys}


def widest(widths: list[dict[str, int]]) -> dict[str, int]:
    """Each paddable key's widest value among `widths` (of configs or members): what a program pads to."""
    out: dict[str, int] = {}
    for each in widths:
        for key, width in each.items():
            out[key] = max(out.get(key, 0), width)
    return out


def regularised(path: tuple, leaf: Any) -> bool:
    """Whether the L2 term counts a Param: kernel-like ones (ndim >= 2, as TF's L2 on weights); biases,
    norm scales (1-D) and embeddings (`embedding`) not."""
    return np.ndim(leaf) >= 2 and "embedding" not in path_names(path)


def l2_penalty(params: nnx.State) -> jax.Array:
    """Sum over the kernel-like Params of sum(w^2)/2 (TF1's `l2_regularizer` without its scale)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(jnp.sum(w * w) for path, w in flat if regularised(path, w)) / 2

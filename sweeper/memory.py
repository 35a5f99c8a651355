"""Fail fast on sizes that cannot fit: what a run, or a fused group, needs in memory, before any work.

Nothing here knows a model's formula. The model's state (its Params, batch statistics, ...) and the
optimizer's come from `jax.eval_shape`; its activations from the jaxpr of one forward pass at the batch
size (the sizes of every value it computes, twice for the backward pass). Training holds the state,
the gradients and the new state of a step, the optimizer's state, the activations of a step and of an
evaluation chunk, and the dataset on the device. It is an estimate to refuse the impossible with one
line (`hidden=100000000` needs about 9 TB), not a promise that what passes fits; a compiled program
is checked again with XLA's own memory analysis (`check_compiled`).

    python -m sweeper.memory                       # configs per fused program, per width and GPU memory
    python -m sweeper.memory --hidden 120 --memory-gb 80 --optimizer adam
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from sweeper.config import ConfigError
from sweeper.task import data, models
from sweeper.task.data import EVAL_CHUNK

FLOAT = 4  # bytes
EVAL_BUDGET = 256 * 2**20  # the activations one evaluation chunk may hold (eval_chunk)


def dataset_bytes(data_cfg: Any) -> int:
    """The dataset on the device: its inputs in their own dtype, int32 labels, the float32 statistics
    its preprocessing uses."""
    info = data.describe(data_cfg)
    examples = info.num_train + info.num_val + info.num_test
    statistics = {"none": 0, "center": 1, "standardize": 2}.get(data_cfg.get("preprocess", "center"), 2)
    inputs = examples * (info.input_size * np.dtype(info.dtype).itemsize + 4)  # and int32 labels
    return inputs + statistics * info.input_size * FLOAT


@functools.lru_cache(maxsize=256)
def activation_bytes(spec: models.Spec, batch: int) -> int:
    """The bytes of every value one forward pass of the model computes for `batch` inputs (its jaxpr's,
    traced on shapes: nothing runs)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = models.abstract(spec)
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.dtype(spec.input_dtype))
    forward = lambda state, x: nnx.merge(model.graphdef, models.data_to_keys(state))(x)  # noqa: E731
    jaxpr = jax.make_jaxpr(forward)(model.state, x).jaxpr
    return _values_bytes(jaxpr)


def _values_bytes(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and hasattr(aval.dtype, "itemsize"):
                total += int(np.prod(aval.shape)) * aval.dtype.itemsize
        for value in eqn.params.values():  # calls (jit, custom_vjp) hold their own jaxprs
            inner = getattr(value, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                total += _values_bytes(inner)
    return total


def eval_chunk(spec: models.Spec) -> int:
    """Examples per evaluation call: as many as EVAL_BUDGET of the model's activations holds, at most
    EVAL_CHUNK (more gains nothing measurable), at least 1."""
    per_example = max(1, activation_bytes(spec, 8) // 8)
    return int(max(1, min(EVAL_CHUNK, EVAL_BUDGET // per_example)))


def state_bytes(cfg: Any, widths: dict[str, int] | None = None) -> tuple[int, int, int]:
    """(Params, the rest of the model state, optimizer state) of one run of `cfg`, in bytes, from
    `jax.eval_shape`; the model at `widths` where given (a program's padded widths)."""
    import jax

    from sweeper.task import train_step

    spec = models.of_config(cfg)
    spec = spec.with_keys(**widths) if widths else spec
    model = models.abstract(spec)
    params, rest = model.bytes()
    opt_state = jax.eval_shape(lambda s: train_step.init_optimizer(cfg.optimizer, s), model.state)
    optimizer = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(opt_state))
    return params, rest, optimizer


def member_bytes(cfg: Any, widths: dict[str, int] | None = None) -> int:
    """What one run adds while it trains: its state, gradients and new state, the optimizer's state, and
    the activations of a training step (forward and backward) and of an evaluation chunk."""
    params, rest, optimizer = state_bytes(cfg, widths)
    spec = models.of_config(cfg)
    spec = spec.with_keys(**widths) if widths else spec
    batch = min(cfg.batch_size, data.describe(cfg.data).num_train)
    activations = 2 * activation_bytes(spec, batch) + activation_bytes(spec, eval_chunk(spec))
    return 3 * params + 2 * rest + optimizer + activations


def needed_bytes(cfg: Any, members: int = 1, widths: dict[str, int] | None = None) -> int:
    """The estimate for `members` runs of `cfg` trained together (a single run: 1), at `widths`."""
    return dataset_bytes(cfg.data) + members * member_bytes(cfg, widths)


def available_bytes() -> tuple[int, str]:
    """(bytes, where): the default device's memory on an accelerator, else the host's available memory."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
            return free, f"{device.device_kind} memory"
    return host_available_bytes(), "available host memory"


def host_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def model_keys_text(cfg: Any, widths: dict[str, int] | None = None) -> str:
    """The model as a user sets it: `hidden=120` (the article's MLP), else `model=Class(key=value, ...)`."""
    if cfg.get("hidden") is not None:
        return f"hidden={(widths or {}).get('hidden', cfg.hidden)}"
    keys = models.model_keys(cfg.model) | dict(widths or {})
    name = str(cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]
    return f"model={name}(" + ", ".join(f"{k}={v}" for k, v in sorted(keys.items())) + ")"


def check_fits(cfg: Any, members: int = 1, widths: dict[str, int] | None = None) -> None:
    """Raise ConfigError, naming the model and the estimate, when `members` runs of `cfg` (at `widths`)
    cannot fit."""
    need = needed_bytes(cfg, members, widths)
    have, where = available_bytes()
    if need > have:
        group = f"{members} fused runs of " if members > 1 else ""
        raise ConfigError(
            f"{model_keys_text(cfg, widths)} needs about {human(need)} for {group}this model and data, more "
            f"than the {human(have)} of {where}: choose a smaller model (or batch_size)"
        )


def check_compiled(compiled: Any, what: str) -> None:
    """Raise ConfigError when XLA's memory analysis of a compiled program says it cannot fit, before it
    runs; programs whose backend reports no analysis pass."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return
    if analysis is None:
        return
    need = sum(
        int(getattr(analysis, f"{kind}_size_in_bytes", 0) or 0)
        for kind in ("argument", "output", "temp", "generated_code")
    ) - int(getattr(analysis, "alias_size_in_bytes", 0) or 0)
    have, where = available_bytes()
    if need > have:
        raise ConfigError(
            f"{what} needs about {human(need)} (XLA's memory analysis), more than the {human(have)} of "
            f"{where}: choose a smaller model, batch_size or hydra.launcher.max_batch"
        )


def members_that_fit(cfg: Any, fraction: float = 0.5) -> int:
    """How many runs of `cfg` fit in one fused program, within `fraction` of the memory available."""
    return members_within(cfg, available_bytes()[0], fraction)


def members_within(cfg: Any, memory: float, fraction: float = 0.5) -> int:
    """How many runs of `cfg` fit in one fused program, within `fraction` of `memory` bytes (at least 1)."""
    return max(1, int((memory * fraction - dataset_bytes(cfg.data)) // member_bytes(cfg)))


def main(argv: list[str] | None = None) -> None:
    """Print how many configs one fused program holds (the fused launcher's `max_batch: null`), per
    width and device memory, for CIFAR-10 and the article's batch; traced on shapes, nothing run."""
    import argparse

    from omegaconf import OmegaConf

    from sweeper.config import AdamConfig, Cifar10Config, Config, MomentumConfig, SGDConfig

    parser = argparse.ArgumentParser(prog="python -m sweeper.memory", description=main.__doc__.split(";")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[60, 120, 240, 480, 1000])
    parser.add_argument("--memory-gb", type=float, nargs="+", default=[16, 24, 40, 80, 141])
    parser.add_argument("--batch-size", type=int, default=Config.batch_size)
    parser.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="sgd")
    args = parser.parse_args(argv)
    print(
        f"Configs per fused program within half a device's memory (CIFAR-10, batch {args.batch_size}, "
        f"{args.optimizer}; sweeper.memory's estimate):"
    )
    print("| hidden | per config | " + " | ".join(f"{gb:g} GB" for gb in args.memory_gb) + " |")
    print("|---|---|" + "---|" * len(args.memory_gb))
    for hidden in args.hidden:
        optimizer = {"sgd": SGDConfig, "momentum": MomentumConfig, "adam": AdamConfig}[args.optimizer]
        cfg = OmegaConf.create(
            {
                "data": OmegaConf.structured(Cifar10Config),
                "hidden": hidden,
                "model": {"_target_": "sweeper.task.model.MLP", "hidden": hidden},
                "batch_size": args.batch_size,
                "optimizer": OmegaConf.structured(optimizer),
            }
        )
        counts = [members_within(cfg, gb * 1e9) for gb in args.memory_gb]
        print(f"| {hidden} | {human(member_bytes(cfg))} | " + " | ".join(f"{n:,}" for n in counts) + " |")


if __name__ == "__main__":
    main()

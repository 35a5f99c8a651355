"""Fail fast on sizes that cannot fit: what a run, or a fused group, needs in memory, before any work.

The estimate counts what training holds at once, in float32: parameters, optimizer state, gradients
and the new parameters of a step; the step's activations and those of an evaluation chunk; and the
dataset on the device (uint8 images). It is an estimate to refuse the impossible with one line
(`hidden=100000000` needs 1.2 TB for its weights alone), not a promise that what passes fits.

    python -m sweeper.memory                       # configs per fused program, per width and GPU memory
    python -m sweeper.memory --hidden 120 --memory-gb 80 --optimizer adam
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sweeper.config import ConfigError
from sweeper.task import data
from sweeper.task.data import EVAL_CHUNK

FLOAT = 4  # bytes
OPTIMIZER_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}  # parameter-sized buffers each optimizer keeps


def dataset_bytes(data_cfg: Any) -> int:
    """The dataset on the device: its inputs in their own dtype, int32 labels, the float32 statistics
    its preprocessing uses."""
    info = data.describe(data_cfg)
    examples = info.num_train + info.num_val + info.num_test
    statistics = {"none": 0, "center": 1, "standardize": 2}.get(data_cfg.get("preprocess", "center"), 2)
    inputs = examples * (info.input_size * np.dtype(info.dtype).itemsize + 4)  # and int32 labels
    return inputs + statistics * info.input_size * FLOAT


def member_bytes(cfg: Any) -> int:
    """What one run adds while it trains: its state and its step's working memory."""
    hidden, info = cfg.hidden, data.describe(cfg.data)
    inputs, classes = info.input_size, info.num_classes
    params = (inputs + 1 + classes) * hidden + classes
    copies = 3 + OPTIMIZER_COPIES.get(cfg.optimizer.name, 2)  # params, gradients, new params, optimizer
    batch = min(cfg.batch_size, info.num_train)
    activations = batch * (inputs + 3 * hidden + 2 * classes) + EVAL_CHUNK * (hidden + classes)
    return (copies * params + activations) * FLOAT


def needed_bytes(cfg: Any, members: int = 1) -> int:
    """The estimate for `members` runs of `cfg` trained together (a single run: 1)."""
    return dataset_bytes(cfg.data) + members * member_bytes(cfg)


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


def check_fits(cfg: Any, members: int = 1) -> None:
    """Raise ConfigError, naming the key and the estimate, when `members` runs of `cfg` cannot fit."""
    need = needed_bytes(cfg, members)
    have, where = available_bytes()
    if need > have:
        group = f"{members} fused runs of " if members > 1 else ""
        raise ConfigError(
            f"hidden={cfg.hidden} needs about {human(need)} for {group}this model and data, more than the "
            f"{human(have)} of {where}: choose a smaller hidden (or batch_size)"
        )


def members_that_fit(cfg: Any, fraction: float = 0.5) -> int:
    """How many runs of `cfg` fit in one fused program, within `fraction` of the memory available."""
    return members_within(cfg, available_bytes()[0], fraction)


def members_within(cfg: Any, memory: float, fraction: float = 0.5) -> int:
    """How many runs of `cfg` fit in one fused program, within `fraction` of `memory` bytes (at least 1)."""
    return max(1, int((memory * fraction - dataset_bytes(cfg.data)) // member_bytes(cfg)))


def main(argv: list[str] | None = None) -> None:
    """Print how many configs one fused program holds (the fused launcher's `max_batch: null`), per
    width and device memory, for CIFAR-10 and the article's batch; no JAX, nothing measured."""
    import argparse

    from omegaconf import OmegaConf

    from sweeper.config import Cifar10Config, Config

    parser = argparse.ArgumentParser(prog="python -m sweeper.memory", description=main.__doc__.split(";")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[60, 120, 240, 480, 1000])
    parser.add_argument("--memory-gb", type=float, nargs="+", default=[16, 24, 40, 80, 141])
    parser.add_argument("--batch-size", type=int, default=Config.batch_size)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZER_COPIES), default="sgd")
    args = parser.parse_args(argv)
    print(
        f"Configs per fused program within half a device's memory (CIFAR-10, batch {args.batch_size}, "
        f"{args.optimizer}; sweeper.memory's estimate):"
    )
    print("| hidden | per config | " + " | ".join(f"{gb:g} GB" for gb in args.memory_gb) + " |")
    print("|---|---|" + "---|" * len(args.memory_gb))
    for hidden in args.hidden:
        cfg = OmegaConf.create(
            {
                "data": OmegaConf.structured(Cifar10Config),
                "hidden": hidden,
                "batch_size": args.batch_size,
                "optimizer": {"name": args.optimizer},
            }
        )
        counts = [members_within(cfg, gb * 1e9) for gb in args.memory_gb]
        print(f"| {hidden} | {human(member_bytes(cfg))} | " + " | ".join(f"{n:,}" for n in counts) + " |")


if __name__ == "__main__":
    main()

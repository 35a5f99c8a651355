"""How many members one program should hold on this machine: time per member-step against rows.

    python benchmarks/cpu_rows.py                  # widths 60..480, 1/2/4/8 rows, 1000 steps each (7 min)
    python benchmarks/cpu_rows.py --steps 100 --widths 120 --rows 1 4   # a quick look

For each width of the article's MLP (batch 400, CIFAR-shaped synthetic data), trains one run alone
(`sweeper.train.train_and_evaluate`) and programs of 2, 4 and 8 members that share their batches (one
seed, one start; lr differs: `sweeper.train.fused.train_group`), each in this process with its own
compile done before the clock (the program's train time: `timings.train_s`). Prints the time per
member-step and its ratio to the run alone: below 1, a program of that many members beats training
them one after another. sweeper.work.CPU_PROGRAM_FLOPS, the forward FLOPs a CPU program stops at, comes
from this table (the widths at which the ratio stops falling).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import machine_info  # noqa: E402

from sweeper import config, work  # noqa: E402
from sweeper.task import models  # noqa: E402
from sweeper.train import fused, train_and_evaluate  # noqa: E402

BASE = ["data=synthetic", "data.train_size=8000", "data.val_size=400", "data.test_size=400", "progress=false"]
BASE += ["log_every=100000", "checkpoint_every=100000", "histograms=false"]


def cfg_of(*overrides: str):
    config.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*BASE, *overrides])


def member_step_ms(width: int, rows: int, steps: int, scratch: Path) -> float:
    """Milliseconds per member-step of `rows` members of `width` units in one program (1: alone)."""
    lrs = [0.0005 * (1 + i) for i in range(rows)]
    cfgs = [cfg_of(f"hidden={width}", f"lr={lr}", f"max_steps={steps}") for lr in lrs]
    dirs = [scratch / f"{width}-{rows}-{i}" for i in range(rows)]
    if rows == 1:
        metrics = [train_and_evaluate(cfgs[0], dirs[0])]
    else:
        metrics = fused.train_group(cfgs, dirs, widths="group", max_batch=rows)
    return 1000 * metrics[0]["timings"]["train_s"] / (steps * rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--widths", type=int, nargs="+", default=[60, 120, 240, 480])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    info = machine_info()
    machine = f"{info['cpu']}, {info['cores']} cores, jax {info['jax']}"
    print(f"`python benchmarks/cpu_rows.py --steps {args.steps}`: {machine}")
    print()
    print(
        "| width | forward GFLOP per member | "
        + " | ".join(f"{r} rows: ms per member-step (vs alone)" for r in args.rows)
        + " |"
    )
    print("|---|---|" + "---|" * len(args.rows))
    with tempfile.TemporaryDirectory(prefix="sweeper-rows-") as scratch:
        for width in args.widths:
            spec = models.of_config(cfg_of(f"hidden={width}"))
            cells, alone = [], None
            for rows in args.rows:
                ms = member_step_ms(width, rows, args.steps, Path(scratch))
                alone = ms if alone is None else alone
                cells.append(f"{ms:.2f} ({ms / alone:.2f}x)")
            gflop = work.forward_flops(spec, 400) / 1e9
            print(f"| {width} | {gflop:.2f} | " + " | ".join(cells) + " |", flush=True)
    print()
    print(f"sweeper.work.CPU_PROGRAM_FLOPS: {work.CPU_PROGRAM_FLOPS / 1e9:.2f} GFLOP")


if __name__ == "__main__":
    main()

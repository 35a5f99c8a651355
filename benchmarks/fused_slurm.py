"""`make bench-slurm`: the 8-config fused grid in Hydra's process against the same grid as 2 SLURM jobs.

    python benchmarks/fused_slurm.py                  # 2000 steps, 2 alternating pairs, a throwaway cluster
    python benchmarks/fused_slurm.py --steps 200 --reps 1   # the harness in a minute

Both sweeps are `python run.py -m GRID` (hidden=60,120 x lr x reg: two widths of 4 configs) on random
CIFAR-10-shaped data with a warm compile cache: `hydra/launcher=fused hydra.launcher.max_batch=4`
trains the two width programs one after the other in the sweep's process;
`hydra/launcher=fused_slurm hydra.launcher.max_batch=4` submits them as one array of 2 SLURM jobs (1 CPU
each), which run side by side. The cluster is the tests' one-node SLURM (tests/slurm/cluster.py,
started as root), or yours where SLURM_CONF names it. Writes benchmarks/RESULTS-slurm.md and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]
from bench import machine_info, publish, run_sweep, spread, write_fake_cifar  # noqa: E402
from devices import GRID  # noqa: E402

LAUNCHERS = {
    "fused, in the sweep's process": ["hydra/launcher=fused", "hydra.launcher.max_batch=4"],
    "fused_slurm, 2 SLURM jobs": [
        "hydra/launcher=fused_slurm",
        "hydra.launcher.max_batch=4",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
    ],
}


def cluster_env() -> tuple[dict[str, str], object | None]:
    """The environment that reaches a SLURM cluster, and the cluster started here (None: SLURM_CONF's)."""
    if os.environ.get("SLURM_CONF"):
        return dict(os.environ), None
    from slurm.cluster import Cluster, Unavailable, ensure_installed

    try:
        ensure_installed()
        cluster = Cluster().start()
    except Unavailable as reason:
        sys.exit(f"no SLURM here: {reason}")
    return dict(os.environ, SLURM_CONF=str(cluster.conf)), cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-slurm.md")
    args = parser.parse_args()

    env, cluster = cluster_env()
    # In the checkout: on a real cluster the jobs see it (a shared file system), unlike /tmp.
    scratch = Path(tempfile.mkdtemp(prefix=".bench-slurm-", dir=ROOT))
    seconds: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    try:
        data_root = write_fake_cifar(scratch / "data")
        cache = scratch / "cache"
        names = list(LAUNCHERS)
        for i, name in enumerate(names):  # fills the compile cache
            run_sweep(data_root, args.steps, GRID, scratch / f"warm-{i}", cache, LAUNCHERS[name], env)
        for rep in range(args.reps):
            for name in names if rep % 2 == 0 else names[::-1]:
                sweep_dir = scratch / f"{rep}-{names.index(name)}"
                seconds[name].append(
                    run_sweep(data_root, args.steps, GRID, sweep_dir, cache, LAUNCHERS[name], env)
                )
                print(f"rep {rep + 1}/{args.reps}: {name} {seconds[name][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if cluster is not None:
            cluster.stop()

    info = machine_info()
    local, on_slurm = (seconds[name] for name in LAUNCHERS)
    ratios = [s / loc for s, loc in zip(on_slurm, local, strict=True)]
    lines = [
        "# The fused grid in the sweep's process and as SLURM jobs",
        "",
        f"`python benchmarks/fused_slurm.py --steps {args.steps} --reps {args.reps}`, "
        f"{datetime.date.today().isoformat()}: `python run.py -m {' '.join(GRID)} LAUNCHER` (8 configs, "
        f"two widths of 4, {args.steps} steps, random CIFAR-10-shaped data, warm compile cache), wall "
        f"time from the command's start to its end; a one-node SLURM on the same machine; "
        f"{info['cpu']}, {info['cores']} cores.",
        "",
        "| launcher | wall (s), median (min–max) |",
        "|---|---|",
    ]
    for name, launcher in LAUNCHERS.items():
        lines.append(f"| {name} (`{' '.join(launcher)}`) | {spread(seconds[name], '{:.1f}')} |")
    lines += [
        "",
        f"Ratio SLURM / local, pair by pair: median {statistics.median(ratios):.2f}.",
        "",
        "Locally the two programs train one after the other on both cores; on SLURM they run side by "
        "side, one job per CPU, and each job pays a Python start, its imports, its compile-cache reads "
        "and the launcher's poll (2 s). On one 2-core node this shows what the SLURM path costs, not "
        "a speed-up: the speed-up comes from more nodes.",
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()

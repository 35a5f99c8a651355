"""`make bench-pool`: the article's search space on CIFAR-10, searched five ways, side by side.

    python benchmarks/pool.py --data-root /path/to/cifar10     # about half an hour on 2 cores
    python benchmarks/pool.py --data-root ... --steps 200 --trials 6   # the harness in minutes

Each method is one `python run.py -m ...` in a fresh process, 2000 steps (`--steps`), validation split
on: the grid of 27 configs (`sweep=article`, the basic launcher); Optuna TPE with its median pruner,
one trial at a time (`sweep=optuna`); the same study through the fused launcher's slot pool with the
rows it chooses for the device (`hydra/launcher=fused`: one on a CPU) and through a pool of 4 rows
(`hydra.sweeper.n_jobs=4`: a trial asked as soon as a row frees); and the grid with asynchronous
successive halving in slot pools of 4 rows (`hydra/launcher=fused hydra.launcher.halving=async
hydra.launcher.max_batch=4`). For each: wall time from start to end; slot occupancy (member-steps
trained / slot-steps the pools ran) and compute occupancy (forward FLOPs the members needed at their
own widths / what their rows computed at their programs' widths), blank without a pool; the best
validation accuracy and its test accuracy. Writes benchmarks/RESULTS-pool.md and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import machine_info, publish  # noqa: E402

from sweeper.summary import pool_usage  # noqa: E402


def methods(trials: int) -> dict[str, list[str]]:
    optuna = ["sweep=optuna", f"hydra.sweeper.n_trials={trials}"]
    return {
        "grid, 27 configs": ["sweep=article"],
        f"Optuna + pruning, {trials} trials one at a time": optuna,
        f"Optuna + pruning, {trials} trials through the fused pool (its rows for the device)": [
            *optuna,
            "hydra/launcher=fused",
        ],
        f"Optuna + pruning, {trials} trials through a pool of 4": [
            *optuna,
            "hydra/launcher=fused",
            "hydra.sweeper.n_jobs=4",
        ],
        "grid + asynchronous halving, pools of 4": [
            "sweep=article",
            "hydra/launcher=fused",
            "hydra.launcher.halving=async",
            "hydra.launcher.max_batch=4",
        ],
    }


def occupancy(jobs: list[dict]) -> tuple[float | None, float | None]:
    """(slot occupancy, compute occupancy) over every pool of the sweep ((None, None) without one):
    member-steps trained over slot-steps, and the FLOPs the members needed over what their rows
    computed."""
    pools = pool_usage(jobs)
    if not pools:
        return None, None
    slots = sum(p.trained for p in pools) / sum(p.slots * p.program_steps for p in pools)
    return slots, sum(p.needed for p in pools) / sum(p.computed for p in pools)


def run(args: list[str], sweep_dir: Path, data_root: str, steps: int, cache: Path) -> dict:
    command = [sys.executable, str(ROOT / "run.py"), "-m", *args, f"data.root={data_root}", "data.md5=null"]
    command += [
        f"max_steps={steps}",
        "progress=false",
        f"jax_cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    jobs = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    best = max(jobs, key=lambda m: m["val_accuracy"] or 0.0)
    return {
        "wall": wall,
        "jobs": len(jobs),
        "to the end": sum(m["status"] == "ok" for m in jobs),
        "occupancy": occupancy(jobs),
        "rows": rows_of(result.stdout),
        "val": best["val_accuracy"],
        "test": best["test_accuracy"],
    }


def rows_of(log: str) -> str:
    """The rows of the sweep's slot pool, where its log says (`slot pool of 1 rows on cpu`)."""
    for line in log.splitlines():
        if "slot pool of " in line:
            return line.split("slot pool of ", 1)[1].split(" rows", 1)[0]
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", required=True, help="CIFAR-10: its cache folder, batches folder or tarball"
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-pool.md")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-pool-"))
    found = {}
    try:
        for i, (name, overrides) in enumerate(methods(args.trials).items()):
            found[name] = run(overrides, scratch / str(i), args.data_root, args.steps, scratch / "cache")
            print(f"{name}: {found[name]['wall']:.1f} s, best val {found[name]['val']:.4f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = machine_info()
    grid = found["grid, 27 configs"]
    seq = found[f"Optuna + pruning, {args.trials} trials one at a time"]
    lines = [
        "# Keeping the fused program full: the article's search space, five ways",
        "",
        f"`python benchmarks/pool.py --steps {args.steps} --trials {args.trials}`, "
        f"{datetime.date.today().isoformat()}: CIFAR-10, {args.steps} steps, validation split on "
        f"(5,000 images), each method one `python run.py -m ...` from start to end; {info['cpu']}, "
        f"{info['cores']} cores, jax {info['jax']}.",
        "",
        "| method | wall (s) | vs grid | vs Optuna one at a time | jobs (to the end) | slot occupancy "
        "| compute occupancy | best val accuracy | its test accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in found.items():
        slots, compute = ("" if v is None else f"{v:.2f}" for v in r["occupancy"])
        vs_seq = f"{r['wall'] / seq['wall']:.2f}×" if name.startswith("Optuna") else ""
        lines.append(
            f"| {name} | {r['wall']:.0f} | {r['wall'] / grid['wall']:.2f}× | {vs_seq} "
            f"| {r['jobs']} ({r['to the end']}) | {slots} | {compute} | {r['val']:.4f} | {r['test']:.4f} |"
        )
    pooled = {name: r["rows"] for name, r in found.items() if r["rows"]}
    lines += ["", *(f"- {name}: a slot pool of {rows} rows." for name, rows in pooled.items())]
    lines += [
        "",
        "Commands (each with `data.root=... max_steps=...`):",
        "",
        *(f"- {name}: `python run.py -m {' '.join(o)}`" for name, o in methods(args.trials).items()),
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()

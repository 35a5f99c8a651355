"""`make bench`: sweeper's default run against a plain PyTorch loop and the machine's fp32 GEMM peak,
then the 27-config sweep with Hydra's basic launcher and with the fused launcher (both width modes).

    python benchmarks/bench.py                 # 3 alternating repetitions + the three sweeps
    python benchmarks/bench.py --sweeps-only   # only the sweeps
    python benchmarks/bench.py --quick         # fewer steps and configs: checks the harness in < 1 min
    python benchmarks/bench.py --data-root /tmp/c10   # real CIFAR-10 instead of random CIFAR-shaped data

Each contender runs in a fresh process, alternating, with the data already on disk in the official
format. Writes benchmarks/RESULTS.md (machine, versions, medians with min/max, ratios) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH, HIDDEN, IMAGE = 400, 120, 3072
SWEEP_GRID = ["hidden=60,120,240", "lr=0.0003,0.001,0.002", "reg=0.01,0.1,1.0"]


def flops_per_step(batch: int = BATCH, hidden: int = HIDDEN) -> float:
    """True FLOPs of one SGD step: forward, weight gradients, the hidden layer's input gradient.

    The first layer's input gradient is never needed, so it is not counted (nor computed).
    """
    first = 2 * batch * IMAGE * hidden  # x @ W1, and again for dW1 = x^T @ dh
    second = 2 * batch * hidden * 10  # h @ W2, dW2 = h^T @ dz, dh = dz @ W2^T
    return 2 * first + 3 * second


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "hydra-core"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    blas = "unknown"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{i['internal_api']} {i.get('version', '')} ({i.get('architecture', '')})"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
        blas = str(config.get("Build Dependencies", {}).get("blas", {}).get("name", "unknown"))
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "blas (numpy)": blas,
        **{k: v for k, v in versions.items()},
    }


def gemm_peak(reps: int) -> dict[str, float]:
    """Best fp32 GFLOP/s of numpy and jax on a square GEMM and on the model's two big products."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    shapes = {
        "2048^3": (2048, 2048, 2048),
        "x@W1 400x3072x120": (400, 3072, HIDDEN),
        "dW1 3072x400x120": (3072, 400, HIDDEN),
    }
    out = {}
    for label, (m, k, n) in shapes.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        flops, inner = 2.0 * m * k * n, max(1, int(2e10 // (2.0 * m * k * n)))
        for name, fn, args in (
            ("numpy", np.matmul, (a, b)),
            ("jax", jax.jit(jnp.matmul), (jnp.asarray(a), jnp.asarray(b))),
        ):
            jax.block_until_ready(fn(*args))
            best = 0.0
            for _ in range(max(reps, 3)):
                started = time.perf_counter()
                for _ in range(inner):
                    result = fn(*args)
                jax.block_until_ready(result)
                best = max(best, flops * inner / (time.perf_counter() - started) / 1e9)
            out[f"{name} {label}"] = best
    return out


def write_fake_cifar(folder: Path, seed: int = 0) -> Path:
    """Random CIFAR-10-shaped batches in the official layout: speed does not depend on pixel values."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name, n in [(f"data_batch_{i}", 10_000) for i in range(1, 6)] + [("test_batch", 10_000)]:
        batch = {
            "data": rng.integers(0, 256, (n, IMAGE), dtype=np.uint8),
            "labels": rng.integers(0, 10, n).tolist(),
        }
        (batches / name).write_bytes(pickle.dumps(batch, protocol=4))
    return folder


def child(command: list[str], env: dict | None = None) -> dict:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"benchmark child failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_sweeper(data_root: Path, steps: int, cache: Path | None, workdir: Path) -> dict:
    overrides = [
        f"data.root={data_root}",
        "data.val_size=0",
        f"max_steps={steps}",
        "progress=false",
        f"jax_cache_dir={cache if cache else 'null'}",
    ]
    return child([sys.executable, str(HERE / "sweeper_run.py"), str(workdir), *overrides])


def run_torch(data_root: Path, steps: int) -> dict:
    return child(
        [sys.executable, str(HERE / "torch_loop.py"), "--data-root", str(data_root), "--steps", str(steps)]
    )


# The sweep's launchers: Hydra's basic one (a job at a time), and the fused one with each way of
# handling different widths (a program per width, or one program padded to the widest).
LAUNCHERS = {
    "basic": [],
    "fused, a program per width": ["hydra/launcher=fused", "hydra.launcher.widths=group"],
    "fused, widths padded": ["hydra/launcher=fused", "hydra.launcher.widths=pad"],
}


def run_sweep(
    data_root: Path,
    steps: int,
    grid: list[str],
    sweep_dir: Path,
    cache: Path,
    launcher: list[str],
    env: dict[str, str] | None = None,
) -> float:
    """Wall time of a sweep, from the command's start to its end (`env`: the command's environment)."""
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        *launcher,
        *grid,
        f"data.root={data_root}",
        "data.val_size=0",
        f"max_steps={steps}",
        "progress=false",
        f"jax_cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"sweep failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - started


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    med = statistics.median(values)
    return fmt.format(med) + (
        f" ({fmt.format(min(values))}–{fmt.format(max(values))})" if len(values) > 1 else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 steps, 1 repetition, 4-config sweeps")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--data-root", type=Path, help="a CIFAR-10 folder (default: random data of its shape)"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch loop")
    parser.add_argument("--no-sweep", action="store_true", help="skip the 27-config sweeps")
    parser.add_argument("--sweeps-only", action="store_true", help="only the 27-config sweeps")
    parser.add_argument(
        "--out", type=Path, help="the table's file (default: RESULTS.md, not with --quick/--sweeps-only)"
    )
    args = parser.parse_args()
    steps, reps = (200, 1) if args.quick else (2000, args.reps)
    grid = ["hidden=60,120", "lr=0.001,0.002", "reg=0.1"] if args.quick else SWEEP_GRID
    has_torch = not args.no_torch and shutil.which(sys.executable) and _importable("torch")

    scratch = Path(tempfile.mkdtemp(prefix="sweeper-bench-"))
    try:
        data_root = args.data_root or write_fake_cifar(scratch / "data")
        info = machine_info()
        print(f"machine: {info['cpu']}, {info['cores']} cores; data: {data_root}", flush=True)
        peak = gemm_peak(1 if args.sweeps_only else reps)
        print("GEMM GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()), flush=True)

        ours: list[dict] = []
        warm: list[dict] = []
        theirs: list[dict] = []
        for rep in range(0 if args.sweeps_only else reps):
            contenders = ["sweeper", "torch"] if has_torch else ["sweeper"]
            for contender in contenders if rep % 2 == 0 else contenders[::-1]:  # alternate who goes first
                if contender == "sweeper":
                    # A fresh compilation cache per repetition: the cold start a first run pays.
                    ours.append(run_sweeper(data_root, steps, scratch / f"cache{rep}", scratch / f"run{rep}"))
                else:
                    theirs.append(run_torch(data_root, steps))
            warm.append(run_sweeper(data_root, steps, scratch / f"cache{rep}", scratch / f"warm{rep}"))
            print(
                f"rep {rep + 1}/{reps}: sweeper {ours[-1]['steps_per_s']:.0f} steps/s"
                + (f", torch {theirs[-1]['steps_per_s']:.0f} steps/s" if has_torch else ""),
                flush=True,
            )

        sweep_s: dict[str, float] = {}
        for i, (name, launcher) in enumerate(LAUNCHERS.items()):
            if args.no_sweep:
                break
            # Each sweep starts from a cold compile cache, as a first sweep on a machine does.
            cache = scratch / f"sweep-cache{i}"
            sweep_s[name] = run_sweep(data_root, steps, grid, scratch / f"sweep{i}", cache, launcher)
            print(f"sweep of {_count(grid)} configs, {name} launcher: {sweep_s[name]:.1f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    report = render(info, peak, ours, warm, theirs, sweep_s, grid, steps, args)
    publish(report, args.out or (None if args.quick or args.sweeps_only else HERE / "RESULTS.md"))


def publish(report: str | list[str], out: Path | None) -> None:
    """Print a report (a text, or its lines) and write it to `out` where given."""
    text = report if isinstance(report, str) else "\n".join(report) + "\n"
    if out:
        out.write_text(text + _own_model_section(out))
    print(text)


# benchmarks/own_model.py's section of RESULTS.md, between these lines: a rewrite of the file keeps it.
OWN_MODEL_BEGIN = "<!-- own-model: written by benchmarks/own_model.py -->"
OWN_MODEL_END = "<!-- /own-model -->"


def _own_model_section(path: Path) -> str:
    """The own-model section of the file at `path`, markers included, to append to its new text, or ""."""
    old = path.read_text() if path.is_file() else ""
    start, stop = old.find(OWN_MODEL_BEGIN), old.find(OWN_MODEL_END)
    if start == -1 or stop < start:
        return ""
    return "\n" + old[start : stop + len(OWN_MODEL_END)] + "\n"


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _count(grid: list[str]) -> int:
    count = 1
    for item in grid:
        count *= len(item.split("=", 1)[1].split(","))
    return count


def render(info, peak, ours, warm, theirs, sweep_s, grid, steps, args) -> str:
    flops = flops_per_step()
    best_peak = max(peak.values())
    lines = [
        "# Benchmark results",
        "",
        f"`python benchmarks/bench.py{' --quick' if args.quick else ''}` — {len(ours)} repetition(s), "
        f"{steps} steps of batch {BATCH}, hidden {HIDDEN}; data: "
        f"{args.data_root or 'random CIFAR-10-shaped data in the official format'}. "
        "Medians, with (min–max).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", "## fp32 GEMM peak", "", "| GEMM | GFLOP/s |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in peak.items()]
    lines += [
        "",
        f"Peak used below: {best_peak:.0f} GFLOP/s (the best of these). One training step is "
        f"{flops / 1e9:.3f} GFLOP (forward + weight gradients), {steps} steps "
        f"{flops * steps / 1e12:.2f} TFLOP.",
    ]
    if ours:
        lines += single_run_table(ours, warm, theirs, flops, best_peak)
    if sweep_s:
        basic = sweep_s.get("basic")
        lines += [
            "",
            "## Sweep",
            "",
            f"`python run.py -m {' '.join(grid)} [launcher]` ({_count(grid)} configs, {steps} steps each, "
            "cold compile cache), wall time from the command's start to its end:",
            "",
            "| launcher | wall (s) | per config (s) | vs basic |",
            "|---|---|---|---|",
        ]
        for name, seconds in sweep_s.items():
            ratio = f"{seconds / basic:.2f}×" if basic else "–"
            lines.append(f"| {name} | {seconds:.1f} | {seconds / _count(grid):.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def single_run_table(ours, warm, theirs, flops, best_peak) -> list[str]:
    lines = ["", "## Single run", "", "| | sweeper | PyTorch loop |", "|---|---|---|"]

    def col(rows: list[dict], key: str, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
        return spread([r[key] * scale for r in rows], fmt) if rows and rows[0].get(key) is not None else "–"

    lines += [
        f"| steps/s | {col(ours, 'steps_per_s', '{:.0f}')} | {col(theirs, 'steps_per_s', '{:.0f}')} |",
        f"| images/s | {col(ours, 'steps_per_s', '{:.0f}', BATCH)} | "
        f"{col(theirs, 'steps_per_s', '{:.0f}', BATCH)} |",
        f"| GFLOP/s | {col(ours, 'steps_per_s', '{:.0f}', flops / 1e9)} | "
        f"{col(theirs, 'steps_per_s', '{:.0f}', flops / 1e9)} |",
        f"| fraction of GEMM peak | {col(ours, 'steps_per_s', '{:.0%}', flops / 1e9 / best_peak)} | "
        f"{col(theirs, 'steps_per_s', '{:.0%}', flops / 1e9 / best_peak)} |",
        f"| training time (s) | {col(ours, 'train_s')} | {col(theirs, 'train_s')} |",
        f"| time to first step, cold compile cache (s) | {col(ours, 'time_to_first_step_s')} | "
        f"{col(theirs, 'time_to_first_step_s')} |",
        f"| time to first step, warm compile cache (s) | {col(warm, 'time_to_first_step_s')} | – |",
        f"| of which imports (s) | {col(ours, 'import_s')} | {col(theirs, 'import_s')} |",
        f"| of which data load (s) | {col(ours, 'data_s')} | – |",
        f"| of which train-step compile (s) | {col(ours, 'compile_s')} | – |",
        f"| whole run, wall (s) | {col(ours, 'wall_time_s')} | – |",
        f"| peak RSS (MB) | {col(ours, 'peak_rss_mb', '{:.0f}')} | {col(theirs, 'peak_rss_mb', '{:.0f}')} |",
    ]
    if ours and theirs:
        ratio = [o["steps_per_s"] / t["steps_per_s"] for o, t in zip(ours, theirs, strict=True)]
        lines += ["", f"Throughput sweeper / PyTorch: {spread(ratio)}×."]
    return lines


if __name__ == "__main__":
    main()

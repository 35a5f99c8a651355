"""`make bench-devices`: one fused program on 1 device against the same program spread over several.

    python benchmarks/devices.py                    # the 8-config grid, 2000 steps, 2 alternating pairs
    python benchmarks/devices.py --steps 200 --reps 1   # the harness in a minute

On a machine with one CPU device, JAX is made to show 2 host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=2`): they share the same cores, so this measures the
cost of splitting a program (correctness and overhead), not a speed-up. With several GPUs, 1 GPU
against all of them. Each sweep is `python run.py -m GRID hydra/launcher=fused hydra.launcher.widths=pad
hydra.launcher.devices=N` on random CIFAR-10-shaped data in a fresh process, with a warm compile cache.
Writes benchmarks/RESULTS-devices.md and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench import machine_info, publish, write_fake_cifar  # noqa: E402

GRID = ["hidden=60,120", "lr=0.001,0.002", "reg=0.1,1.0"]  # 8 configs
FORCE_2 = "--xla_force_host_platform_device_count=2"


def local_devices(env: dict[str, str]) -> tuple[str, int]:
    """(platform, count) of the local devices a child process with `env` sees."""
    code = "import jax; print(jax.devices()[0].platform, jax.local_device_count())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    platform, count = out.stdout.split()
    return platform, int(count)


def sweep(data_root: Path, steps: int, devices: int, workdir: Path, cache: Path, env: dict) -> float:
    """Wall time of the fused grid on `devices` devices, from the command's start to its end."""
    command = [sys.executable, str(ROOT / "run.py"), "-m", *GRID, "hydra/launcher=fused"]
    command += ["hydra.launcher.widths=pad", f"hydra.launcher.devices={devices}"]
    command += [f"data.root={data_root}", f"max_steps={steps}", "progress=false", f"jax_cache_dir={cache}"]
    command += [f"hydra.sweep.dir={workdir}"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"sweep failed:\n{result.stderr[-3000:]}")
    log = result.stdout + result.stderr  # Hydra's own log lines go to stdout
    if devices > 1 and f"on {devices} devices" not in log:
        sys.exit(f"the program did not span {devices} devices:\n{log[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS-devices.md")
    args = parser.parse_args()

    env = dict(os.environ)
    platform, count = local_devices(env)
    forced = platform == "cpu" and count == 1
    if forced:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FORCE_2}".strip()
        count = 2
    if count < 2:
        sys.exit(f"one {platform} device: nothing to compare")
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-devices-"))
    try:
        data_root = write_fake_cifar(scratch / "data")
        cache = scratch / "cache"
        sweep(data_root, args.steps, 1, scratch / "warm1", cache, env)  # fills the compile cache
        sweep(data_root, args.steps, count, scratch / "warmN", cache, env)
        seconds: dict[int, list[float]] = {1: [], count: []}
        for rep in range(args.reps):
            for devices in (1, count) if rep % 2 == 0 else (count, 1):
                seconds[devices].append(
                    sweep(data_root, args.steps, devices, scratch / f"{rep}-{devices}", cache, env)
                )
                print(
                    f"rep {rep + 1}/{args.reps}: {devices} device(s) {seconds[devices][-1]:.1f} s", flush=True
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    info = machine_info()
    kind = f"{count} host devices forced on one CPU" if forced else f"{count} {platform} devices"
    ratios = [n / one for n, one in zip(seconds[count], seconds[1], strict=True)]
    lines = [
        "# One fused program on 1 device and on several",
        "",
        f"`python benchmarks/devices.py --steps {args.steps} --reps {args.reps}`, "
        f"{datetime.date.today().isoformat()}: `python run.py -m {' '.join(GRID)} hydra/launcher=fused "
        f"hydra.launcher.widths=pad hydra.launcher.devices=N` (8 configs in one program, {args.steps} "
        f"steps, random CIFAR-10-shaped data, warm compile cache), wall time from start to end; {kind}; "
        f"{info['cpu']}, {info['cores']} cores.",
        "",
        "| devices | wall (s), median (min–max) |",
        "|---|---|",
    ]
    for devices, values in seconds.items():
        lines.append(f"| {devices} | {statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f}) |")
    lines += ["", f"Ratio {count} devices / 1, pair by pair: median {statistics.median(ratios):.2f}."]
    if forced:
        lines += [
            "",
            "The forced host devices share the machine's cores: this shows what splitting the program "
            "costs, not a speed-up.",
        ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()

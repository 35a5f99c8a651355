"""`make bench-model`: the example CNN's grid, one job at a time against fused, side by side.

The grid of examples/own_model's ConvNet trained one job at a time with Hydra's basic launcher and as
vmapped programs with the fused launcher, both in one invocation:

    python benchmarks/own_model.py              # 8 configs, the experiment's 300 steps -> RESULTS.md
    python benchmarks/own_model.py --steps 100  # fewer steps each
    python benchmarks/own_model.py --quick --no-write   # 2 configs, 40 steps: the harness in < 1 min

Both sweeps run on the same shapes.npz (written by examples/own_model/make_data.py into a temp folder),
each as a fresh `python run.py -m --config-dir examples/own_model/my_conf +experiment=convnet <grid>`
process with a cold compile cache (`jax_cache_dir=null`): the wall time is the whole process, start to
end. The grid is model.channels=8,16 lr=0.01,0.03 optimizer.momentum=0.8,0.9; model.channels is a shape
key, so the fused launcher trains one program per width, with lr and momentum varying inside it. Reports
each launcher's wall time, their ratio, and the best validation accuracy with its config (the same for
both: a fused member trains as its single run does). Replaces the own-model section of
benchmarks/RESULTS.md (appended the first time) and leaves the rest of the file alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "own_model"
sys.path.insert(0, str(HERE))
from bench import OWN_MODEL_BEGIN as BEGIN  # noqa: E402
from bench import OWN_MODEL_END as END  # noqa: E402
from bench import machine_info, publish  # noqa: E402

GRID = ["model.channels=8,16", "lr=0.01,0.03", "optimizer.momentum=0.8,0.9"]
# One width, so the fused launcher's two configs share one program: the harness's cheapest check.
QUICK_GRID = ["model.channels=8", "lr=0.01,0.03"]
QUICK_STEPS = 40
# `fused` as it is used; `vmapped` makes it put every config of a width into one program, which on a CPU
# it does not do for a convolutional model by itself (sweeper.train.plan.one_at_a_time): the reason, measured.
LAUNCHERS = {
    "basic": [],
    "fused": ["hydra/launcher=fused"],
    "vmapped": ["hydra/launcher=fused", "hydra.launcher.max_batch=8"],
}


def count(grid: list[str]) -> int:
    """The number of configs in a grid of `key=v1,v2,...` overrides."""
    total = 1
    for item in grid:
        total *= len(item.split("=", 1)[1].split(","))
    return total


def make_data(folder: Path) -> Path:
    """Write the example's shapes.npz into `folder` with its own script (its default size and seed)."""
    path = folder / "shapes.npz"
    command = [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(path)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return path


def sweep(launcher: list[str], grid: list[str], data: Path, steps: int | None, sweep_dir: Path) -> dict:
    """Run one sweep as a fresh process; its wall time and each job's metrics, by job folder name."""
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "-m",
        "--config-dir",
        str(EXAMPLE / "my_conf"),
        "+experiment=convnet",
        *launcher,
        *grid,
        f"data.path={data}",
        "progress=false",
        # No persistent cache: each launcher pays its own compilation, as on a fresh machine.
        "jax_cache_dir=null",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    if steps is not None:
        command.append(f"max_steps={steps}")
    # The example's model class (my_models.ConvNet) is found on PYTHONPATH, as in its README.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    result = subprocess.run(command, cwd=EXAMPLE, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(launcher) or 'basic launcher'} sweep failed:\n{result.stderr[-3000:]}")
    jobs = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/metrics.json"))}
    if len(jobs) != count(grid):
        sys.exit(f"expected {count(grid)} jobs in {sweep_dir}, found {len(jobs)}")
    # Sorted by folder name, so that ties pick the same config for both launchers.
    best = max(jobs, key=lambda name: jobs[name]["val_accuracy"] or 0.0)
    return {"wall": wall, "jobs": jobs, "best": best, "val": jobs[best]["val_accuracy"]}


def experiment_steps() -> int:
    """max_steps of the example's experiment config (what runs without --steps)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(EXAMPLE / "my_conf" / "experiment" / "convnet.yaml").max_steps)


def render(found: dict[str, dict], grid: list[str], steps: int, command: str) -> list[str]:
    """The section's lines, markers included."""
    info = machine_info()
    basic, fused = found["basic"], found["fused"]
    shared = sorted(set(basic["jobs"]) & set(fused["jobs"]))
    gap = max(
        abs((basic["jobs"][n]["val_accuracy"] or 0.0) - (fused["jobs"][n]["val_accuracy"] or 0.0))
        for n in shared
    )
    lines = [
        BEGIN,
        "## Your own model: the example CNN's grid, fused vs one job at a time",
        "",
        f"`{command}`, {info['date']}: {info['cpu']}, {info['cores']} cores; jax {info['jax']}, "
        f"flax {info['flax']}, optax {info['optax']}. The ConvNet of examples/own_model on its shapes.npz "
        f"(`+experiment=convnet`), {count(grid)} configs (`{' '.join(grid)}`), {steps} steps each, cold "
        "compile cache; wall time of each `python run.py -m ...` from its start to its end.",
        "",
        "| launcher | wall (s) | best val accuracy (config) |",
        "|---|---|---|",
    ]
    for name, r in found.items():
        lines.append(f"| {name} | {r['wall']:.1f} | {r['val']:.4f} (`{r['best']}`) |")
    lines += [
        "",
        f"Fused / basic: {fused['wall'] / basic['wall']:.2f}× the wall time "
        f"(a {basic['wall'] / fused['wall']:.2f}× speedup). Same best config: "
        f"{'yes' if basic['best'] == fused['best'] else 'no'}; largest difference in any config's val "
        f"accuracy between the two: {gap:.4f}.",
    ]
    if "vmapped" in found:
        vmapped = found["vmapped"]
        lines += [
            "",
            f"vmapped (`hydra.launcher.max_batch=8`: each width's configs in one vmapped program) / basic: "
            f"{vmapped['wall'] / basic['wall']:.2f}× the wall time.",
        ]
    lines += [
        END,
    ]
    return lines


def splice(old: str, section: list[str]) -> str:
    """`old` with its own-model section replaced by `section`, or with it appended if it has none."""
    block = "\n".join(section) + "\n"
    start, stop = old.find(BEGIN), old.find(END)
    if start != -1 and stop > start:
        return old[:start] + block + old[stop + len(END) :].removeprefix("\n")
    return old.rstrip("\n") + "\n\n" + block if old.strip() else block


def main() -> None:
    """Run both sweeps, print the section and write it into --out unless --no-write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, a 2-config grid")
    parser.add_argument("--steps", type=int, help="steps per config (default: the experiment's)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the file to update")
    parser.add_argument("--no-write", action="store_true", help="only print the section")
    args = parser.parse_args()
    grid = QUICK_GRID if args.quick else GRID
    steps = args.steps or (QUICK_STEPS if args.quick else None)

    scratch = Path(tempfile.mkdtemp(prefix="sweeper-own-model-"))
    found: dict[str, dict] = {}
    try:
        data = make_data(scratch)
        for name, launcher in LAUNCHERS.items():
            found[name] = sweep(launcher, grid, data, steps, scratch / name)
            print(f"{name}: {found[name]['wall']:.1f} s, best val {found[name]['val']:.4f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    flags = (" --quick" if args.quick else "") + (f" --steps {args.steps}" if args.steps else "")
    command = f"python benchmarks/own_model.py{flags}" if flags else "make bench-model"
    section = render(found, grid, steps or experiment_steps(), command)
    if args.no_write:
        publish(section, None)
        return
    old = args.out.read_text() if args.out.is_file() else ""
    args.out.write_text(splice(old, section))
    publish(section, None)
    print(f"updated {args.out}")


if __name__ == "__main__":
    main()

"""Launching without a cluster: stand-ins for sbatch, squeue and sacct, and a launch in a subprocess.

    env = fake_slurm(tmp_path, sbatch_ok=True)   # sbatch keeps each script and answers job 42
    result = launch("sweeper", tmp_path / "sweep", env, "hidden=16,32")
    submitted(tmp_path)                          # the sbatch scripts, in the order they came

squeue lists nothing and sacct fails, as without accounting: a job of sweeper's wait is lost at once
(with hydra.launcher.lost_after_s=0). The launch runs in a subprocess (tests/slurm/launch.py), because
importing submitit reconfigures logging, and because a wait that hangs must fail a test, not hold it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOB_ID = "42"
LAUNCH_TIMEOUT_S = 120


def fake_slurm(folder: Path, sbatch_ok: bool = True) -> dict[str, str]:
    """An environment whose sbatch, squeue and sacct are the stand-ins, written under `folder`."""
    bin_dir, kept = folder / "bin", folder / "submitted"
    bin_dir.mkdir(parents=True, exist_ok=True)
    kept.mkdir(exist_ok=True)
    answer = f'echo "Submitted batch job {JOB_ID}"' if sbatch_ok else 'echo "sbatch: refused" >&2; exit 1'
    scripts = {
        # The script is sbatch's last argument; numbered so that the order of submissions shows.
        "sbatch": f'n=$(ls "{kept}" | wc -l)\ncp "${{@: -1}}" "{kept}/$n.sh"\n{answer}',
        "squeue": "exit 0",
        "sacct": 'echo "sacct: no accounting" >&2; exit 1',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def submitted(folder: Path) -> list[str]:
    """The sbatch scripts the stand-in was given, in order."""
    paths = sorted((folder / "submitted").glob("*.sh"), key=lambda p: int(p.stem))
    return [p.read_text() for p in paths]


def launch(mode: str, sweep_dir: Path, env: dict[str, str], *overrides: str) -> dict:
    """tests/slurm/launch.py's answer (JSON) for a launch of `overrides` with `mode`'s launcher."""
    out = sweep_dir.parent / f"{sweep_dir.name}-{mode}.json"
    command = [sys.executable, str(HERE / "launch.py"), mode, str(sweep_dir), str(out), *overrides]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"the {mode} launch did not return within {LAUNCH_TIMEOUT_S} s: it waits on its jobs "
            f"in a way sweeper does not expect (hydra-submitit-launcher or submitit changed?)\n{error.stderr}"
        ) from None
    assert result.returncode == 0 and out.is_file(), f"{mode} launch:\n{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())

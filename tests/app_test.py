"""sweeper among other Hydra apps: its sweep configs, its plugins' manners, a fused sweep's visibility."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import CONF, FAST, ROOT, compose_config, run_cli

from sweeper import summary
from sweeper.status import Status

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_config_composes(sweep):
    cfg = compose_config(f"sweep={sweep}", return_hydra=True)
    params = cfg.hydra.sweeper.params
    assert params and set(params) <= {"hidden", "lr", "reg", "seed"}, sweep
    assert cfg.hidden >= 1 and cfg.lr > 0


# Hydra's own structured-config tutorial app, as a user would run it beside sweeper.
TUTORIAL_APP = """
from dataclasses import dataclass
import hydra
from hydra.core.config_store import ConfigStore

@dataclass
class MySQLConfig:
    host: str = "localhost"
    port: int = 3306

ConfigStore.instance().store(name="base_config", node=MySQLConfig)

@hydra.main(version_base=None, config_name="base_config")
def my_app(cfg: MySQLConfig) -> None:
    print(f"Host: {cfg.host}, port: {cfg.port}")

if __name__ == "__main__":
    my_app()
"""


def test_plugins_leave_another_hydra_app_untouched(tmp_path):
    app = tmp_path / "my_app.py"
    app.write_text(TUTORIAL_APP)
    result = subprocess.run(
        [sys.executable, str(app), f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Host: localhost, port: 3306"  # its own base_config, not sweeper's
    assert result.stderr == ""


@pytest.mark.slow
def test_without_optuna_the_app_starts_without_warnings(tmp_path):
    """A core install has no Optuna: sweeper's Optuna plugin must then stay silent."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['optuna'] = None  # not installed\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0 and "hidden: 120" in result.stdout
    assert result.stderr == ""
    check = subprocess.run([sys.executable, "-c", "import optuna"], capture_output=True, env=env)
    assert check.returncode != 0  # the simulation holds


@pytest.mark.slow
def test_a_killed_fused_sweep_lists_every_job_and_reported_each_as_it_finished(tmp_path):
    args = [*FAST, "max_steps=600", "histograms=false", "hidden=16,24,32", "lr=0.001,0.002"]
    args += ["hydra/launcher=fused", "hydra.launcher.widths=group", f"hydra.sweep.dir={tmp_path}"]
    out = (tmp_path.parent / "out.txt").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *args], cwd=ROOT, stdout=out, stderr=out
    )
    deadline = time.monotonic() + 240
    # Programs train one after another: stop once the second one has checkpoints.
    while (
        len(list(tmp_path.glob("*/metrics.json"))) < 2
        or len(list(tmp_path.glob("*/checkpoints/step_100.pkl"))) < 4
    ):
        assert process.poll() is None and time.monotonic() < deadline, (
            "the sweep ended before it could be killed"
        )
        time.sleep(0.01)
    process.kill()
    process.wait()
    out.close()
    printed = (tmp_path.parent / "out.txt").read_text()
    assert "job 1 of 6" in printed and "of 6 done" in printed  # progress came as members finished

    jobs = summary.read_jobs(tmp_path)
    assert len(jobs) == 6  # every job has its record from the start
    by_status = {s: sorted(j.params["hidden"] for j in jobs if j.status is s) for s in Status}
    assert len(by_status[Status.OK]) == 2 and len(set(by_status[Status.OK])) == 1
    assert len(by_status[Status.UNFINISHED]) == 2 and len(set(by_status[Status.UNFINISHED])) == 1
    assert len(by_status[Status.NOT_STARTED]) == 2
    result = run_cli("-m", *args)  # and the rerun finishes it
    assert result.returncode == 0, result.stderr
    assert {j.status for j in summary.read_jobs(tmp_path)} == {Status.OK}

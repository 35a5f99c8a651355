"""A fused program over several local devices (sweeper.train.devices) trains every member as on one device.

Four CPU devices are forced in a child process (tests/multi_device.py), with JAX's
`--xla_force_host_platform_device_count`; on two cores that is about correctness, not speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from fused_test import assert_same_run, metrics_of
from multi_device import GRID

FORCE_4 = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}


def train(scenario: str, devices: int, out: Path, *overrides: str) -> list[dict]:
    """Every GRID config's metrics after a fused run of `scenario` on `devices` of 4 local devices."""
    command = [sys.executable, str(ROOT / "tests" / "multi_device.py"), scenario, str(devices), str(out)]
    env = {**os.environ, **FORCE_4, "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run([*command, *overrides], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    spans = "on 4 devices" in result.stderr
    assert spans == (devices == 4), result.stderr  # the log says what a program spans
    return [metrics_of(out / str(i)) for i in range(len(GRID))]


def assert_same_runs(got_dir: Path, expected_dir: Path, step: int) -> None:
    for i in range(len(GRID)):
        got, expected = metrics_of(got_dir / str(i)), metrics_of(expected_dir / str(i))
        assert_same_run(got, expected, got_dir / str(i), expected_dir / str(i), step)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The plain fused grid on one device: what every multi-device run must match."""
    out = tmp_path_factory.mktemp("one") / "grid"
    train("grid", 1, out)
    return out


@pytest.mark.slow
def test_a_grid_on_4_devices_gives_every_member_its_one_device_metrics(tmp_path, one_device):
    train("grid", 4, tmp_path / "grid")
    assert_same_runs(tmp_path / "grid", one_device, 200)


@pytest.mark.slow
def test_halving_on_4_devices_keeps_the_same_members(tmp_path):
    on_1, on_4 = train("halving", 1, tmp_path / "1"), train("halving", 4, tmp_path / "4")
    assert [m["steps"] for m in on_4] == [m["steps"] for m in on_1]
    assert [m["status"] for m in on_4] == [m["status"] for m in on_1]
    assert {m["status"] for m in on_4} == {"ok", "pruned"}


@pytest.mark.slow
def test_pbt_on_4_devices_makes_the_same_copies(tmp_path):
    on_1, on_4 = train("pbt", 1, tmp_path / "1"), train("pbt", 4, tmp_path / "4")
    assert [m["lineage"] for m in on_4] == [m["lineage"] for m in on_1]
    assert any(m["lineage"] for m in on_4)  # members did copy others
    assert_same_runs(tmp_path / "4", tmp_path / "1", 200)


@pytest.mark.slow
def test_a_slot_pool_on_4_devices_refills_as_on_one(tmp_path):
    on_1, on_4 = train("pool", 1, tmp_path / "1"), train("pool", 4, tmp_path / "4")
    assert [m["timings"]["pool"] for m in on_4] == [m["timings"]["pool"] for m in on_1]
    assert sorted({m["timings"]["pool"]["joined"] for m in on_4}) == [0, 50, 200, 250]  # staggered joins
    assert [m["status"] for m in on_4] == [m["status"] for m in on_1]
    for i, (got, expected) in enumerate(zip(on_4, on_1, strict=True)):
        if got["status"] == "ok":
            assert_same_run(got, expected, tmp_path / "4" / str(i), tmp_path / "1" / str(i), 200)


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(4, 1), pytest.param(1, 4, marks=pytest.mark.slow)])
def test_a_checkpoint_resumes_on_another_number_of_devices(tmp_path, one_device, first, then):
    train("grid", first, tmp_path / "grid")
    for i in range(len(GRID)):  # as if stopped right after the checkpoints of step 100
        (tmp_path / "grid" / str(i) / "metrics.json").unlink()
        (tmp_path / "grid" / str(i) / "checkpoints" / "step_200.pkl").unlink()
    train("grid", then, tmp_path / "grid", "resume=true")  # from each member's step-100 checkpoint
    assert all(len(m["attempts"]) == 2 for m in (metrics_of(tmp_path / "grid" / str(i)) for i in range(8)))
    assert_same_runs(tmp_path / "grid", one_device, 200)


@pytest.mark.slow
def test_more_devices_than_the_machine_has_is_a_one_line_error(tmp_path):
    args = ["-m", "hydra/launcher=fused", "data=synthetic", "hidden=16,32", "hydra.launcher.devices=5"]
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path / 's'}", env=FORCE_4)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: hydra.launcher.devices must be at most 4, the local cpu devices here, got 5"
    )
    assert not any(p.name != "multirun.yaml" for p in (tmp_path / "s").glob("*"))  # no job started

"""sweeper as an installed package (docs/package.md): `python -m sweeper` and the `sweeper` command run
run.py's app from a folder of the user's own, with sweeper's configs and the user's `--config-dir` groups
beside them, in this environment's install and in a wheel built from the repository."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose_config
from omegaconf import OmegaConf

from sweeper import app

DOC = ROOT / "docs" / "package.md"
# A run of seconds; every command here also names its own run folder.
SHORT = ["max_steps=20", "log_every=10", "jax_cache_dir=null"]
# What the wheel needs to build: the package's sources and the files pyproject.toml names.
WHEEL_SOURCES = ("pyproject.toml", "README.md", "sweeper", "hydra_plugins", "conf")


def doc_files() -> dict[str, str]:
    """The config files docs/package.md shows (a `my_conf/...yaml` line, then a yaml block): path ->
    text, so that the recipe tested is the one the reader copies."""
    blocks = re.findall(r"^`(my_conf/[\w/]+\.yaml)`:\s*\n```yaml\n(.*?)^```", DOC.read_text(), re.M | re.S)
    return dict(blocks)


def user_folder(tmp_path: Path, *names: str) -> Path:
    """A project folder of the user's with the files `names` of docs/package.md in it."""
    files = doc_files()
    for name in names:
        assert name in files, f"docs/package.md shows no {name}"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(files[name])
    return tmp_path


def sweeper(
    *args: str, cwd: Path, command: list[str] | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m sweeper ARGS` (or `command ARGS`) run from `cwd`, output captured."""
    return subprocess.run(
        [*(command or [sys.executable, "-m", "sweeper"]), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env} if env else None,
    )


def finished(run_dir: Path, result: subprocess.CompletedProcess) -> tuple[dict, dict, dict]:
    """A finished run's (metrics.json, .hydra/config.yaml, .hydra/hydra.yaml's `hydra` node)."""
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 20, metrics
    assert (run_dir / "run.log").is_file()  # the job's name, as run.py's
    cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
    return metrics, cfg, read_yaml(run_dir / ".hydra" / "hydra.yaml")["hydra"]


def read_yaml(source: Path | str) -> dict:
    """A YAML file (or text) as plain containers, interpolations left as written."""
    node = OmegaConf.load(source) if isinstance(source, Path) else OmegaConf.create(source)
    return OmegaConf.to_container(node)


def config_sources(hydra_cfg: dict) -> list[str]:
    """The folders the run's configs came from, in Hydra's search order."""
    return [s["path"] for s in hydra_cfg["runtime"]["config_sources"] if s["schema"] == "file"]


@pytest.mark.slow
def test_python_m_sweeper_runs_from_a_folder_of_ones_own(tmp_path):
    run_dir = tmp_path / "run"
    result = sweeper("data=synthetic", *SHORT, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    _, cfg, hydra_cfg = finished(run_dir, result)
    assert config_sources(hydra_cfg) == [str(app.config_dir())]
    assert app.config_dir() == CONF.resolve()  # the installed package reads the repository's conf/
    assert hydra_cfg["runtime"]["cwd"] == str(tmp_path.resolve())
    assert cfg["data"]["name"] == "synthetic"


@pytest.mark.slow
def test_config_dir_adds_the_users_groups_beside_sweepers(tmp_path):
    folder = user_folder(tmp_path, "my_conf/data/tiny.yaml")
    # A config.yaml of the user's own must not replace sweeper's: were it read, hidden would be 7.
    (folder / "my_conf" / "config.yaml").write_text("defaults:\n  - base_config\n  - _self_\nhidden: 7\n")
    run_dir = tmp_path / "run"
    result = sweeper("--config-dir", "my_conf", "data=tiny", *SHORT, f"hydra.run.dir={run_dir}", cwd=folder)
    _, cfg, hydra_cfg = finished(run_dir, result)
    tiny = read_yaml(doc_files()["my_conf/data/tiny.yaml"])
    tiny.pop("defaults")
    assert tiny and {k: cfg["data"][k] for k in tiny} == tiny
    assert cfg["data"]["name"] == "synthetic"  # built on sweeper's own option
    assert hydra_cfg["runtime"]["choices"]["data"] == "tiny"
    assert cfg["hidden"] == compose_config("data=synthetic").hidden  # sweeper's config.yaml, not the user's
    assert config_sources(hydra_cfg) == [str(app.config_dir()), str((folder / "my_conf").resolve())]


@pytest.mark.slow
def test_an_experiment_file_sets_the_users_defaults(tmp_path):
    folder = user_folder(tmp_path, "my_conf/data/tiny.yaml", "my_conf/experiment/mine.yaml")
    run_dir = tmp_path / "run"
    args = ["--config-dir", "my_conf", "+experiment=mine", *SHORT, f"hydra.run.dir={run_dir}"]
    _, cfg, hydra_cfg = finished(run_dir, sweeper(*args, cwd=folder))
    mine = read_yaml(doc_files()["my_conf/experiment/mine.yaml"])
    given = {a.split("=", 1)[0] for a in SHORT}  # the command line wins over the file
    keys = {k: v for k, v in mine.items() if k != "defaults" and k not in given}
    assert keys and {k: cfg[k] for k in keys} == keys
    picked = [d for d in mine["defaults"] if isinstance(d, dict)]
    assert picked, "the experiment picks no group"
    for choice in picked:
        ((key, option),) = choice.items()
        assert hydra_cfg["runtime"]["choices"][key.removeprefix("override /")] == option, key
    assert cfg["max_steps"] == 20


def test_the_console_script_is_declared():
    """The installed distribution's `sweeper` command is sweeper.app.main (after a change to
    pyproject.toml: pip install -e '.[dev]' --config-settings editable_mode=compat)."""
    scripts = importlib.metadata.distribution("sweeper").entry_points.select(group="console_scripts")
    assert "sweeper" in scripts.names, f"no `sweeper` command among {sorted(scripts.names)}"
    assert scripts["sweeper"].load() is app.main


@pytest.mark.slow
def test_a_wheel_serves_a_folder_of_ones_own(tmp_path):
    """A regular (non-editable) install of a wheel built from the repository, used from another folder:
    its configs are package data, all of conf/, and its `sweeper` command trains."""
    pytest.importorskip("setuptools", minversion="77")  # builds the wheel here, offline
    source = tmp_path / "source"
    source.mkdir()
    for name in WHEEL_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-3000:]
    packaged = (site / "sweeper" / "conf").resolve()
    assert {p.relative_to(packaged) for p in packaged.rglob("*.yaml")} == {
        p.relative_to(CONF) for p in CONF.rglob("*.yaml")
    }
    folder = user_folder(tmp_path / "project", "my_conf/data/tiny.yaml")
    run_dir = tmp_path / "run"
    args = ["--config-dir", "my_conf", "data=tiny", *SHORT, f"hydra.run.dir={run_dir}"]
    # The command the wheel installed, its own Python on the path (not this checkout's sweeper).
    result = sweeper(
        *args, cwd=folder, command=[str(site / "bin" / "sweeper")], env={"PYTHONPATH": str(site)}
    )
    _, cfg, hydra_cfg = finished(run_dir, result)
    assert config_sources(hydra_cfg) == [str(packaged), str((folder / "my_conf").resolve())]
    assert cfg["data"]["train_size"] == read_yaml(doc_files()["my_conf/data/tiny.yaml"])["train_size"]

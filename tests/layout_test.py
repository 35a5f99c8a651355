"""The package's shape: imports flow one way between its folders, modules stay small, and importing
sweeper's modules leaves Hydra's state alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "sweeper"
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 150, 60
# What each folder of sweeper/ may import from the others: the experiment (task) knows nothing of how it
# is trained or recorded; what a run leaves (record) knows nothing of the machinery that trains it.
MAY_IMPORT = {
    "task": {"task"},
    "record": {"task", "record"},
    "sweep": {"sweep"},
    "train": {"task", "record", "sweep", "train"},
}


def sources(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def sweeper_imports(path: Path) -> set[str]:
    """The sweeper modules `path` imports (`sweeper.train.plan`), at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sweeper"):
            found |= {
                f"{node.module}.{a.name}" if node.module == "sweeper" else node.module for a in node.names
            }
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sweeper")}
    return found


@pytest.mark.parametrize("folder", sorted(MAY_IMPORT))
def test_imports_between_the_packages_folders_flow_one_way(folder):
    wrong = []
    for path in sources(PACKAGE / folder):
        for module in sweeper_imports(path):
            parts = module.split(".")
            if len(parts) >= 2 and parts[1] in MAY_IMPORT and parts[1] not in MAY_IMPORT[folder]:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, wrong


def test_no_class_over_150_lines_and_no_function_over_60():
    too_long = []
    for path in sources(PACKAGE, ROOT / "hydra_plugins"):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = {ast.ClassDef: MAX_CLASS_LINES, ast.FunctionDef: MAX_FUNCTION_LINES}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not too_long, too_long


def test_importing_sweepers_modules_stores_nothing_in_hydras_config_store():
    # Hydra imports every plugin module on every app's start, and another app may import sweeper.trial:
    # only run.py (and code that composes sweeper's configs) registers sweeper's schemas.
    modules = ["sweeper.cli", "sweeper.trial", "sweeper.summary", "hydra_plugins.sweeper_fused._core"]
    code = (
        "from hydra.core.config_store import ConfigStore\n"
        "before = repr(ConfigStore.instance().repo)\n"
        f"import {', '.join(modules)}\n"
        "print(before == repr(ConfigStore.instance().repo))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"

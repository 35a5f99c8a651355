"""sweeper's Hydra app, one for every way to start it: `python run.py` in a clone, `python -m sweeper` and
the `sweeper` command of an installed package, each run from the folder its outputs go to.

Its configs are sweeper's `conf/`: the repository's top-level folder in a clone or an editable install,
package data (`sweeper/conf`, built from that same folder) in a wheel. `--config-dir DIR` adds a folder
of your own beside them (docs/package.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra

from sweeper import cli, config


def config_dir() -> Path:
    """The folder of sweeper's configs: the package's own copy where a wheel installed one, else the
    top-level conf/ of the clone this module was imported from."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return packaged if packaged.is_dir() else here.parent / "conf"


# An absolute path: Hydra reads a relative one against the module that calls it (here sweeper/, not the
# folder run.py sits in), and `pkg://` would need conf/ to be a package of the clone too.
@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def task(cfg: Any) -> float | None:
    """One run or one sweep job (sweeper.cli.run); its value is what Hydra's sweepers optimise."""
    return cli.run(cfg)


def main() -> None:
    """The command line (`sweeper`, `python -m sweeper`, `python run.py`): register sweeper's schemas,
    which conf/ extends, before Hydra composes it, then run `task` through sweeper.cli.main."""
    config.register()
    cli.main(task)

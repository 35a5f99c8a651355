"""`hydra/sweeper=sweeper_optuna`: a Hydra sweeper on current Optuna (>= 4), with its ask/tell API.

    python run.py -m sweep=optuna                       # conf/sweep/optuna.yaml: TPE, median pruner
    python run.py -m sweep=optuna hydra.sweeper.n_trials=40 hydra.sweep.dir=<the same folder>  # continue

The search space uses Hydra's override grammar as Hydra's Optuna sweeper does: `choice(...)`, a comma
list, `range(...)`, `interval(...)`, `tag(log, interval(...))`; plain values stay fixed. The work is in
`_core.py`, imported (with Optuna) only when sweeping.
"""

# No `from __future__ import annotations` (see config.py).
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str = "sweeper",
        n_trials: int = 20,
        n_jobs: int = 1,
        pruner: Any = None,
        report_key: str = "trial",
        params: dict[str, str] | None = None,
    ) -> None:
        from sweeper.config import ConfigError

        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
        if n_trials < 1 or n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials}, {n_jobs}")
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.report_key = n_trials, n_jobs, report_key
        self.params = params or {}
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> Any:
        from . import _core

        return _core.sweep(self, arguments)

"""`hydra/sweeper=sweeper_optuna`: a drop-in for Hydra's Optuna sweeper, on Optuna >= 4, with pruning.

    python my_app.py -m hydra/sweeper=sweeper_optuna 'x=interval(-5, 5)' hydra.sweeper.n_trials=30
    python run.py -m sweep=optuna                       # sweeper's app: TPE with a median pruner

The keys, their defaults and the search-space grammar are those of Hydra's Optuna sweeper (config.py);
docs/search.md lists what differs. The work is in `_core.py`, imported (with Optuna) only when sweeping.
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
        direction: Any = "minimize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int | None = 2,
        max_failure_rate: float = 0.0,
        params: dict[str, str] | None = None,
        custom_search_space: str | None = None,
        pruner: Any = None,
        report_key: str | None = None,
        objective_key: str | None = None,
    ) -> None:
        # Checked when the sweep starts (_core.Settings), where a bad value can end it in one line.
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params or {})
        self.custom_search_space, self.report_key = custom_search_space, report_key
        self.objective_key = objective_key
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

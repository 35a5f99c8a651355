"""The Optuna sweeper's settings (`hydra.sweeper.*`): `hydra/sweeper=sweeper_optuna` in Hydra's ConfigStore.

The keys are those of Hydra's own Optuna sweeper (sampler, direction, storage, study_name, n_trials,
n_jobs, params) plus `pruner`. Hydra imports every plugin module on every app's start: this one
imports nothing but Hydra, so it is silent where Optuna is not installed.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.sweeper_optuna.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper instantiates sampler and pruner itself (it reseeds the sampler)
    # Any Optuna sampler, instantiated by Hydra; its seed is offset by the trials a study already has.
    sampler: dict[str, Any] = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    # Any Optuna pruner (e.g. {_target_: optuna.pruners.MedianPruner, n_warmup_steps: 500}); null: none.
    pruner: dict[str, Any] | None = None
    direction: str = "maximize"
    # null: an Optuna journal file `<sweep dir>/optuna.journal`; a path ending in .journal: that file;
    # anything else: an Optuna storage URL (sqlite:///..., postgresql://...).
    storage: str | None = None
    study_name: str = "sweeper"
    n_trials: int = 20  # finished trials the study should have; a rerun runs only those still missing
    n_jobs: int = 1  # trials asked at once and handed to the launcher together
    # With a pruner: the app's config node that receives each job's trial (storage, study_name,
    # number) so that the job can report to it; sweeper's app has `trial`.
    report_key: str = "trial"
    params: dict[str, str] | None = None  # the search space, in Hydra's override grammar


ConfigStore.instance().store(
    group="hydra/sweeper", name="sweeper_optuna", node=OptunaSweeperConf, provider="sweeper"
)

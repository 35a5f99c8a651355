"""The Optuna sweeper's settings (`hydra.sweeper.*`): `hydra/sweeper=sweeper_optuna` in Hydra's ConfigStore.

The keys are those of Hydra's own Optuna sweeper (sampler, direction, storage, study_name, n_trials,
n_jobs, params) plus `pruner`; samplers and pruners are config groups, as in Hydra's sweeper:
`hydra/sweeper/sampler=tpe|random`, `hydra/sweeper/pruner=median|successive_halving|hyperband|threshold`
(`=null`: no pruning). Hydra imports every plugin module on every app's start: this one imports nothing but
Hydra, so it is silent where Optuna is not installed.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None  # offset by the trials a study already has, so a rerun does not replay them
    n_startup_trials: int = 10
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class MedianPrunerConf:
    """Stop a trial whose value is below the median of earlier trials' at the same step."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # no pruning until this many trials have finished
    n_warmup_steps: int = 0  # no pruning before this step
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class ThresholdPrunerConf:
    """Stop a trial whose value falls outside [lower, upper]."""

    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.sweeper_optuna.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper instantiates sampler and pruner itself (it reseeds the sampler)
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])
    sampler: Any = None
    pruner: Any = None  # null: no pruning
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


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="sweeper_optuna", node=OptunaSweeperConf, provider="sweeper")
for name, node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf)):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sweeper")
for name, node in (
    ("median", MedianPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
    ("hyperband", HyperbandPrunerConf),
    ("threshold", ThresholdPrunerConf),
):
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sweeper")

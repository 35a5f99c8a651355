"""The Optuna sweeper's settings (`hydra.sweeper.*`): `hydra/sweeper=sweeper_optuna` in Hydra's ConfigStore.

The keys and their defaults are those of Hydra's own Optuna sweeper (sampler, direction, storage,
study_name, n_trials, n_jobs, max_failure_rate, params, custom_search_space), so that another app's
config means the same here; sweeper adds `pruner` and `report_key`. Samplers and pruners are config
groups: `hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii|qmc|gp`,
`hydra/sweeper/pruner=median|successive_halving|hyperband|threshold` (none by default). A sampler key
left null takes Optuna's own default. Hydra imports every plugin module on every app's start: this one
imports nothing but Hydra, so it is silent where Optuna is not installed.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any, NoReturn

from hydra.core.config_store import ConfigStore


def motpe_removed(*args: Any, **kwargs: Any) -> NoReturn:
    """`hydra/sweeper/sampler=motpe`: the sampler is gone from Optuna 4."""
    raise ValueError(
        "the 'motpe' sampler was removed in Optuna 4.0: use hydra/sweeper/sampler=tpe, which handles "
        "several objectives"
    )


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None  # offset by the trials a study already has, so a rerun does not replay them
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: bool | None = None


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConf:
    """Every combination of the search space's values, each once (the space must be discrete)."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the sweeper passes the grid, built from `params`
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    independent_sampler: Any = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any = None
    inc_popsize: int = 2
    use_separable_cma: bool = False
    source_trials: Any = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any = None


@dataclass
class GPSamplerConf:
    """Optuna's Gaussian-process sampler; it needs PyTorch."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    independent_sampler: Any = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class MOTPESamplerConf:
    _target_: str = "hydra_plugins.sweeper_optuna.config.motpe_removed"
    seed: int | None = None  # so that a config that seeds its sampler still reaches the error


@dataclass
class MedianPrunerConf:
    """Stop a trial whose value is worse than the median of earlier trials' at the same step."""

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
    # minimize or maximize, or a list of them for a task that returns several values (the result is
    # then the Pareto front). null: as the app's objective (objective_key) says.
    direction: Any = "minimize"
    # null: an Optuna journal file `<sweep dir>/optuna.journal`; a path ending in .journal: that file;
    # anything else: an Optuna storage URL (sqlite:///..., postgresql://...).
    storage: str | None = None
    study_name: str | None = None  # null: the one study in the storage, or a new one Optuna names
    n_trials: int = 20  # finished trials the study should have; a rerun runs only those still missing
    # Trials asked at once and handed to the launcher together; null: the launcher's choice (the fused
    # launcher's rows for this device, hydra_plugins/sweeper_fused; any other launcher 1).
    n_jobs: int | None = 2
    # A batch whose share of failed trials is above this stops the sweep with their errors (exit 1).
    max_failure_rate: float = 0.0
    params: dict[str, str] | None = None  # the search space, in Hydra's override grammar
    # A callable's dotted path, `(config, optuna.trial.Trial) -> None`, that suggests more parameters.
    custom_search_space: str | None = None
    pruner: Any = None  # null: no pruning
    # The app's config node that also receives each job's trial (storage, study_name, number); null:
    # the job's environment only (sweeper.trial.report reads it there). sweeper's app has `trial`.
    report_key: str | None = None
    # The app's config node holding its objective's `mode` (max or min): a null direction follows it,
    # and a direction that contradicts it (its first entry, for a list) is refused. null: none.
    # sweeper's app has `objective`.
    objective_key: str | None = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="sweeper_optuna", node=OptunaSweeperConf, provider="sweeper")
for name, node in (
    ("tpe", TPESamplerConf),
    ("random", RandomSamplerConf),
    ("grid", GridSamplerConf),
    ("cmaes", CmaEsSamplerConf),
    ("nsgaii", NSGAIISamplerConf),
    ("gp", GPSamplerConf),
    ("qmc", QMCSamplerConf),
    ("motpe", MOTPESamplerConf),
):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sweeper")
for name, node in (
    ("median", MedianPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
    ("hyperband", HyperbandPrunerConf),
    ("threshold", ThresholdPrunerConf),
):
    store.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sweeper")

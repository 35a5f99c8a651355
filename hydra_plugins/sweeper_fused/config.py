"""The fused launcher's settings (`hydra.launcher.*`), in Hydra's ConfigStore as `hydra/launcher=fused`.

Hydra imports every plugin module on every app's start: this one imports nothing but Hydra.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationBasedTrainingConf:
    interval: int = 0  # every `interval` steps the worst members copy the best; 0: off
    quantile: float = 0.25  # the fraction that copies, and the fraction copied from
    factors: list[float] = field(default_factory=lambda: [0.8, 1.25])  # lr and reg perturbations


@dataclass
class FusedLauncherConf:
    _target_: str = "hydra_plugins.sweeper_fused.fused_launcher.FusedLauncher"
    # The module that trains groups of jobs: `accepts(cfg)`, `plan(...)` and `train_group(...)`
    # (sweeper.fused documents the contract). Jobs it does not accept go through the task function.
    trainer: str = "sweeper.fused"
    # Most configs in one program, bigger groups are split into chunks; null: as many as half the
    # device's memory holds (sweeper.memory's estimate).
    max_batch: int | None = None
    hidden: str = "auto"  # group: a program per width | pad: pad to the widest | auto: group on CPU, else pad
    halving: bool = False  # successive halving across every program of the sweep
    keep: float = 0.5  # fraction kept at each rung
    rungs: list[int] | None = None  # steps of the rungs; null: max_steps * keep**2 and max_steps * keep
    pbt: PopulationBasedTrainingConf = field(default_factory=PopulationBasedTrainingConf)


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="sweeper")

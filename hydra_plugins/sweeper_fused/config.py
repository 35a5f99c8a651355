"""The fused launcher's settings (`hydra.launcher.*`), in Hydra's ConfigStore as `hydra/launcher=fused`:
each default here, each check in `check_settings`.

Hydra imports every plugin module on every app's start: this one imports nothing but Hydra.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules, where
# dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationBasedTrainingConf:
    interval: int = 0  # every `interval` steps the worst members copy the best; 0: off
    quantile: float = 0.25  # the fraction that copies, and the fraction copied from
    factors: list[float] = field(default_factory=lambda: [0.8, 1.25])  # each key's perturbation
    # What it perturbs: lr, reg and numeric optimizer keys (optimizer.momentum, optimizer.b1, ...).
    perturb: list[str] = field(default_factory=lambda: ["lr", "reg"])


@dataclass
class FusedLauncherConf:
    _target_: str = "hydra_plugins.sweeper_fused.fused_launcher.FusedLauncher"
    # Most configs in one program, bigger groups are split into chunks; null: as many as half the
    # device's memory holds (sweeper.memory's estimate).
    max_batch: int | None = None
    # Configs of different `hidden`: group: a program per width | pad: one program, zero-padded to the
    # widest | auto: group on CPU, else pad.
    widths: str = "auto"
    hidden: str | None = None  # the old name of `widths`: refused, with the new one
    # true: successive halving across every program of the sweep; async: asynchronous (ASHA), each
    # member judged as it reaches a rung, against those that reached it so far (slot pools keep it)
    halving: Any = False
    keep: float = 0.5  # fraction kept at each rung
    rungs: list[int] | None = None  # steps of the rungs; null: max_steps * keep**2 and max_steps * keep
    pbt: PopulationBasedTrainingConf = field(default_factory=PopulationBasedTrainingConf)
    # Local devices each program spreads its members over (the first N); null: all of them.
    devices: int | None = None


def fused_settings(**settings: Any) -> FusedLauncherConf:
    """The launcher's `hydra.launcher.*` fused-training keys as a checked FusedLauncherConf."""
    pbt = PopulationBasedTrainingConf(**dict(settings.pop("pbt", None) or {}))
    checked = FusedLauncherConf(**settings, pbt=pbt)
    check_settings(checked)
    return checked


def check_settings(settings: FusedLauncherConf) -> None:
    """Raise ConfigError naming the first `hydra.launcher.*` key whose value is out of range. (What
    depends on the jobs' configs, such as halving's validation split, the sweep's plan checks.)"""
    from sweeper.config import ConfigError

    pbt = settings.pbt
    for ok, message in [
        (
            settings.max_batch is None or settings.max_batch >= 1,
            f"max_batch must be >= 1, got {settings.max_batch}",
        ),
        (
            settings.hidden is None,
            f"hidden is now hydra.launcher.widths (auto, group or pad): set widths={settings.hidden}",
        ),
        (
            settings.widths in ("auto", "group", "pad"),
            f"widths must be auto, group or pad, got {settings.widths!r}",
        ),
        (
            settings.halving in (True, False, "async"),
            f"halving must be true, false or async, got {settings.halving!r}",
        ),
        (0 < settings.keep < 1, f"keep must be in (0, 1), got {settings.keep}"),
        (
            settings.rungs is None or all(r >= 1 for r in settings.rungs),
            f"rungs must be steps >= 1, got {settings.rungs}",
        ),
        (
            settings.devices is None or settings.devices >= 1,
            f"devices must be >= 1 or null (all local devices), got {settings.devices}",
        ),
        (pbt.interval >= 0, f"pbt.interval must be >= 0, got {pbt.interval}"),
        (0 < pbt.quantile <= 0.5, f"pbt.quantile must be in (0, 0.5], got {pbt.quantile}"),
        (all(f > 0 for f in pbt.factors), f"pbt.factors must be > 0, got {list(pbt.factors)}"),
    ]:
        if not ok:
            raise ConfigError(f"hydra.launcher.{message}")


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="sweeper")

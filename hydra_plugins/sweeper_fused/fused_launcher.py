"""`hydra/launcher=fused`: a Hydra launcher that trains a sweep's configs as few vmapped programs.

    python run.py -m hydra/launcher=fused sweep=article              # the 27-config grid
    python run.py -m hydra/launcher=fused sweep=article hydra.launcher.halving=true

The work is in `_core.py`, imported only when launching: Hydra imports this module on every app's
start, so it imports nothing but Hydra.
"""

# No `from __future__ import annotations` (see config.py).
import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class FusedLauncher(Launcher):
    def __init__(
        self,
        trainer: str = "sweeper.fused",
        max_batch: int | None = None,
        hidden: str = "auto",
        halving: bool = False,
        keep: float = 0.5,
        rungs: list[int] | None = None,
        pbt: Any = None,
    ) -> None:
        from sweeper.config import ConfigError

        if max_batch is not None and max_batch < 1:
            raise ConfigError(f"hydra.launcher.max_batch must be >= 1, got {max_batch}")
        if hidden not in ("auto", "group", "pad"):
            raise ConfigError(f"hydra.launcher.hidden must be auto, group or pad, got {hidden!r}")
        if not 0 < keep < 1:
            raise ConfigError(f"hydra.launcher.keep must be in (0, 1), got {keep}")
        if rungs is not None and any(int(r) < 1 for r in rungs):
            raise ConfigError(f"hydra.launcher.rungs must be steps >= 1, got {list(rungs)}")
        pbt = dict(pbt or {})
        if pbt.get("interval", 0) < 0 or not 0 < pbt.get("quantile", 0.25) <= 0.5:
            raise ConfigError(f"hydra.launcher.pbt needs interval >= 0 and quantile in (0, 0.5], got {pbt}")
        if pbt.get("interval") and halving:
            raise ConfigError("hydra.launcher: halving and pbt do not mix, choose one")
        self.trainer, self.max_batch, self.hidden = trainer, max_batch, hidden
        self.halving, self.keep = halving, keep
        self.rungs = None if rungs is None else tuple(sorted({int(r) for r in rungs}))
        self.pbt = pbt
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.device_data: dict = {}  # datasets on the device, shared by every launch of this process

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)

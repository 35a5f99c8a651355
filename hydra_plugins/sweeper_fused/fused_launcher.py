"""`hydra/launcher=fused`: a Hydra launcher that trains a sweep's configs as few vmapped programs.

    python run.py -m hydra/launcher=fused sweep=article              # the article's grid
    python run.py -m hydra/launcher=fused sweep=article hydra.launcher.halving=true

Its settings, their defaults and their checks are in config.py; the work is in `_core.py`, imported
only when launching: Hydra imports this module on every app's start, so it imports nothing but Hydra.
"""

# No `from __future__ import annotations` (see config.py).
import logging
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import fused_settings

log = logging.getLogger(__name__)


class FusedLauncher(Launcher):
    """Takes the `hydra.launcher.*` settings of FusedLauncherConf (any left out keep its default)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = fused_settings(**settings)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.device_data: dict = {}  # datasets on the device, shared by every launch of this process

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)

    def can_stream(self) -> bool:
        """Whether `launch_stream` can train jobs asked one at a time: not with halving=true or PBT,
        which rank or copy members at one step. Raises ConfigError where the sweep's config cannot
        train as the settings ask (before a sweeper asks any job)."""
        if self.settings.halving not in (False, "async") or self.settings.pbt.interval:
            return False
        from . import _core

        _core.check_stream(self)
        return True

    def default_slots(self) -> int:
        """The rows of a slot pool that a sweeper leaves to the launcher (Optuna's n_jobs=null): on a CPU 1,
        a trial at a time, since a CPU computes members one after another (docs/fused.md); on
        accelerators 8 per device."""
        from . import _core

        return _core.default_slots(self)

    def launch_stream(
        self,
        next_overrides: Callable[[], Sequence[str] | None],
        on_return: Callable[[int, JobReturn], None],
        slots: int,
        initial_job_idx: int,
    ) -> Sequence[JobReturn]:
        """Jobs asked as the rows of one slot pool of `slots` free (what sweeper_optuna uses: a trial
        asked as soon as a row frees, told as soon as it ends); see `_core.launch_stream`."""
        from . import _core

        return _core.launch_stream(self, next_overrides, on_return, slots, initial_job_idx)

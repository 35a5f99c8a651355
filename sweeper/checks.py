"""Every check of a run's config before any work, in one call: its keys and ranges (sweeper.config), its
objective (sweeper.objective), what it asks of its data (sweeper.task.data: from the config where the
source's sizes are known, else by loading the user's arrays once) and its model (sweeper.task.models: the
class imports, takes its keys and returns logits (N, num_classes), traced on shapes: nothing computed)."""

from __future__ import annotations

from typing import Any

from sweeper import config
from sweeper.config import ConfigError
from sweeper.objective import Objective
from sweeper.task import data, models


def validate(cfg: Any) -> None:
    """Raise ConfigError (or DataError) naming the first key or array that cannot train."""
    config.validate(cfg)
    Objective.of(cfg)
    info = data.describe(cfg.data)
    n_train = info.num_train
    if not cfg.batch_size <= n_train:
        raise ConfigError(
            f"batch_size must be in [1, {n_train}] (the training-set size), got {cfg.batch_size}"
        )
    models.abstract(models.of_config(cfg, info))

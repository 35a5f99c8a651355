"""Hydra's Optuna sweeper, made resumable: a rerun into the same study runs only the trials still missing.

Selected by `conf/sweep/optuna.yaml`. The search itself is Optuna's (through hydra-optuna-sweeper); this
subclass only (1) creates the sweep folder first, so the study's sqlite file can live in it, and (2)
counts the trials an earlier, interrupted attempt already finished, so that `n_trials` is the study's
total rather than a number of new trials. Trials the interruption left running are marked failed, and a
seeded sampler is reseeded past the finished trials so that it does not replay their suggestions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """OptunaSweeper whose `n_trials` counts the finished trials already in its storage."""

    def sweep(self, arguments: list[str]) -> Any:
        impl = self.sweeper
        Path(str(impl.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if impl.storage:
            finished = _finish_interrupted(str(impl.storage), impl.study_name)
            if finished:
                impl.n_trials = max(int(impl.n_trials) - finished, 0)
                log.info(
                    "study %s has %d finished trials: running %d more",
                    impl.study_name,
                    finished,
                    impl.n_trials,
                )
                sampler_cfg = impl.config.hydra.sweeper.sampler
                if sampler_cfg.get("seed") is not None and "Grid" not in str(sampler_cfg.get("_target_")):
                    # A seeded sampler would replay the first attempt's random start-up suggestions.
                    impl.sampler = instantiate(sampler_cfg, seed=int(sampler_cfg.seed) + finished)
        return super().sweep(arguments)


def _finish_interrupted(storage: str, study_name: str | None) -> int:
    """Mark an earlier attempt's still-running trials failed; return how many trials finished."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return 0
    states = optuna.trial.TrialState
    for trial in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
        study._storage.set_trial_state(trial._trial_id, states.FAIL)
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE,)))

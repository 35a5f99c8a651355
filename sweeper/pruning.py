"""Optuna pruning inside a job: report validation accuracy to the job's study trial, stop when told.

The Optuna sweeper (hydra_plugins/sweeper_optuna) gives each job of a pruning study its trial through
the config node `trial` (storage, study_name, number). Any number of jobs, in this process or in
others (joblib, SLURM), report to the same study through its storage: by default an Optuna journal
file, which Optuna locks across processes. Optuna is imported only here, and only when a job has one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sweeper.engine import Controller, Engine
from sweeper.status import Status

log = logging.getLogger(__name__)

PRUNED_ATTR = "sweeper_pruned"  # set on a trial its job stopped because the pruner said so
PRUNER_ATTR = "sweeper_pruner"  # the study's pruner config, for the jobs that report to it


def storage(url: str) -> Any:
    """An Optuna storage: a journal file for a path (ending in .journal, say), else a storage URL."""
    import optuna

    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            url, lock_obj=optuna.storages.journal.JournalFileOpenLock(url)
        )
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


def open_trial(trial_cfg: Any) -> Any:
    """The study trial a job was given (`trial.storage`, `trial.study_name`, `trial.number`), judged by
    the pruner the study was created with (the sweeper keeps its config among the study's attributes:
    a pruner belongs to the process's Study object, not to the storage)."""
    import optuna
    from hydra.utils import instantiate

    store = storage(trial_cfg.storage)
    spec = optuna.load_study(study_name=trial_cfg.study_name, storage=store).user_attrs.get(PRUNER_ATTR)
    pruner = instantiate(spec) if spec else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=trial_cfg.study_name, storage=store, pruner=pruner)
    study_id = store.get_study_id_from_name(trial_cfg.study_name)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, int(trial_cfg.number))
    return optuna.trial.Trial(study, trial_id)


def has_trial(cfg: Any) -> bool:
    trial_cfg = cfg.get("trial") if hasattr(cfg, "get") else None
    return trial_cfg is not None and trial_cfg.get("number") is not None


class TrialPruning(Controller):
    """At every log point, each member that has a trial reports its validation accuracy to it, and
    ends `pruned` (checkpointed, with its metrics then) when the study's pruner says so."""

    def __init__(self, members: list[Any]):
        self.trials = {member: open_trial(member.cfg.trial) for member in members if has_trial(member.cfg)}

    def act(self, engine: Engine, step: int) -> None:
        if step == 0 or not engine.schedule.is_log_point(step):
            return
        pruned = []
        for program, row in engine.members_at(step):
            member = program.members[row]
            trial = self.trials.get(member)
            if trial is None:
                continue
            value = float(program.val_accuracies()[row])
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr(PRUNED_ATTR, True)
                member.record.log.info(
                    "pruned at step %d by the study's pruner (trial %d, val accuracy %.4f)",
                    step,
                    trial.number,
                    value,
                )
                pruned.append((program, row))
        engine.end_members(pruned, Status.PRUNED)

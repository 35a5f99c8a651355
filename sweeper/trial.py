"""Report to the Optuna trial a Hydra job was given, from any task function, and learn when to stop.

    from sweeper.trial import report

    @hydra.main(...)
    def task(cfg):
        for epoch in range(cfg.epochs):
            loss = ...
            if report(loss, step=epoch):  # the study's pruner stops this trial
                break
        return loss

Under `hydra/sweeper=sweeper_optuna` with a pruner, each job is told its trial (storage, study name,
number) in its environment, `SWEEPER_TRIAL` (set through `hydra.job.env_set`, so it reaches jobs under
every launcher); an app that names a config node in `hydra.sweeper.report_key` gets it there instead
(sweeper's own app: `trial`). Outside such a sweep `report` does nothing and returns False. Optuna is
imported only when a job has a trial, and JAX never.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRUNED_ATTR = "sweeper_pruned"  # set on a trial its job stopped because the pruner said so
PRUNER_ATTR = "sweeper_pruner"  # the study's pruner config, for the jobs that report to it
ENV = "SWEEPER_TRIAL"  # a job's trial as JSON: {"storage": ..., "study_name": ..., "number": ...}
KEYS = ("storage", "study_name", "number")


@dataclass(frozen=True)
class TrialRef:
    """Where a job's trial lives: an Optuna storage (a journal file path or a URL), a study, a number."""

    storage: str
    study_name: str
    number: int

    @classmethod
    def of(cls, node: Any) -> TrialRef | None:
        """The trial named by a mapping with the keys storage, study_name and number (a config node), or
        None."""
        values = {key: node.get(key) for key in KEYS} if node is not None else {}
        if any(values.get(key) is None for key in KEYS):
            return None
        return cls(str(values["storage"]), str(values["study_name"]), int(values["number"]))

    @classmethod
    def from_environment(cls) -> TrialRef | None:
        text = os.environ.get(ENV)
        return cls.of(json.loads(text)) if text else None

    def as_json(self) -> str:
        return json.dumps({"storage": self.storage, "study_name": self.study_name, "number": self.number})


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


def open_trial(ref: TrialRef) -> Any:
    """The study trial `ref` names, judged by the pruner the study was created with (the sweeper keeps
    its config among the study's attributes: a pruner belongs to the process's Study object, not to the
    storage)."""
    import optuna
    from hydra.utils import instantiate

    store = storage(ref.storage)
    spec = optuna.load_study(study_name=ref.study_name, storage=store).user_attrs.get(PRUNER_ATTR)
    pruner = instantiate(spec) if spec else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=ref.study_name, storage=store, pruner=pruner)
    study_id = store.get_study_id_from_name(ref.study_name)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, ref.number)
    return optuna.trial.Trial(study, trial_id)


def report_to(trial: Any, value: float, step: int) -> bool:
    """Report `value` at `step` to an open trial; True (and the trial marked pruned) when its pruner
    stops it."""
    trial.report(float(value), int(step))
    if not trial.should_prune():
        return False
    trial.set_user_attr(PRUNED_ATTR, True)
    return True


_open: dict[TrialRef, Any] = {}  # a job reports many times: one storage connection per trial


def report(value: float, step: int) -> bool:
    """Report an intermediate `value` at `step` to this job's Optuna trial. True when the study's pruner
    stops the trial: the task should end (what it returns is then ignored) and the sweep tells Optuna
    PRUNED, with the last value reported. Outside a sweeper_optuna sweep: nothing, and False."""
    ref = TrialRef.from_environment()
    if ref is None:
        return False
    if ref not in _open:
        _open[ref] = open_trial(ref)
    return report_to(_open[ref], value, step)

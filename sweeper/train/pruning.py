"""Optuna pruning inside sweeper's training loop: report the objective, stop when told.

The Optuna sweeper (hydra_plugins/sweeper_optuna) gives each job of a study its trial through the
config node `trial` (storage, study_name, number). Any number of jobs, in this process or in others
(joblib, SLURM), report to the same study through its storage (sweeper.trial, which any other app
uses through `sweeper.trial.report`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sweeper.status import Status
from sweeper.train.control import Controller, Decision, EndMembers, Note, Row
from sweeper.train.program import Member
from sweeper.train.schedule import Schedule
from sweeper.trial import TrialRef, open_trial, report_to

log = logging.getLogger(__name__)


def has_trial(cfg: Any) -> bool:
    """Whether a run's config names an Optuna trial to report to."""
    return TrialRef.of(cfg.get("trial") if hasattr(cfg, "get") else None) is not None


class TrialPruning(Controller):
    """At every log point, each member that has a trial reports its objective (sweeper.objective) to it,
    and
    ends `pruned` (checkpointed, with its metrics then) when the study's pruner says so."""

    def __init__(self, members: list[Member]):
        self.trials: dict[Member, Any] = {}
        self.admit(members)

    def admit(self, members: list[Member]) -> None:
        self.trials |= {m: open_trial(TrialRef.of(m.cfg.trial)) for m in members if has_trial(m.cfg)}

    def act(self, step: int, members: list[Row], schedule: Schedule) -> Sequence[Decision]:
        decisions: list[Decision] = []
        pruned = []
        for program, row in members:
            member, own = program.members[row], program.member_step(row)
            trial = self.trials.get(member)
            if trial is None or own == 0 or not schedule.is_log_point(own):
                continue
            value = float(program.objective_values()[row])
            if report_to(trial, value, own):  # the report goes to the study now, whatever it answers
                line = "pruned at step %d by the study's pruner (trial %d, %s %.4f)"
                decisions.append(
                    Note.to((program, row), line, own, trial.number, program.objective.label, value)
                )
                pruned.append((program, row))
        return [*decisions, EndMembers(tuple(pruned), Status.PRUNED)]

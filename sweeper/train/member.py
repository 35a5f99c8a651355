"""A `Member` is one run in a program (sweeper.train.program): its config, record, data order, and what
the program keeps of it between segments; `new_member` makes one as its config says, fresh or resumed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweeper.record import checkpoint
from sweeper.record.run import RunRecord
from sweeper.status import Status
from sweeper.task import data, models, train_step
from sweeper.train.history import History, Values, config_values


@dataclass(eq=False)
class Member:
    """One run in a program: its config, record and data order, where it starts, and what the program
    keeps of it between segments. Only Program's methods change it (and its record, how it ended)."""

    cfg: Any
    record: RunRecord
    order: data.BatchOrder
    start: int  # the step it starts (or resumes) at
    initial: tuple[Any, Any] | None  # (model state, opt_state) at `start`, until a program takes them
    history: History
    last_losses: np.ndarray | None = None  # the losses of its last segment
    # What the program measured of it on a whole split ({"val_accuracy": ..., "val_loss": ...}) and at
    # which program step ({"val": step}): a rung, the objective and the next log point share one pass.
    measured: dict[str, float] = field(default_factory=dict)
    measured_at: dict[str, int] = field(default_factory=dict)
    # The program's step minus this member's own step: 0 when every member of a program started
    # together, else the program step it joined at minus the step it started at (a slot pool).
    offset: int = 0
    spec: models.Spec | None = None  # its model on its data (sweeper.task.models)
    # Forward-pass FLOPs over the steps it trained in this attempt (sweeper.work): what its own model
    # needs, and what its row computed at its program's (padded) widths. Their ratio: compute occupancy.
    work: tuple[float, float] = (0.0, 0.0)
    values: Values = field(init=False)  # what it trains with now: its history's at the program's step

    def __post_init__(self) -> None:
        self.values = self.hyperparameters_at(self.start)

    @property
    def lr(self) -> float:
        return self.values.lr

    @property
    def reg(self) -> float:
        return self.values.reg

    @property
    def widths(self) -> dict[str, int]:
        """Its model's paddable keys and their values (sweeper.task.models): what a program pads to."""
        return models.widths_of(self.spec)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def status(self) -> Status | None:
        """How it ended (sweeper.record.run), None while it trains."""
        return self.record.status

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.record.metrics

    def hyperparameters_at(self, step: int) -> Values:
        """The values it trains with from `step` on, as its history says (else its config)."""
        return self.history.hyperparameters_at(step, config_values(self.cfg))


def new_member(
    cfg: Any, record: RunRecord, info: data.Info, upto: int | None = None, *, population: bool = False
) -> Member:
    """A run as its config says, on the data `info` describes: initialised from `cfg.seed`, or resumed
    from its latest checkpoint (not past step `upto`; refused if written on other data). A `population`
    member (sweeper.train.controllers.PopulationBasedTraining) records its lr, reg and copies from step 0
    on."""
    spec = models.of_config(cfg, info)
    params, order_seed = train_step.init_run(spec, cfg.seed)
    opt_state = train_step.init_optimizer(cfg.optimizer, params)
    order = data.BatchOrder(order_seed, info.num_train, cfg.batch_size)
    start, saved = 0, {}
    if cfg.resume:
        params, opt_state, start, saved = checkpoint.restore_latest(
            record.workdir / "checkpoints",
            params,
            opt_state,
            order.state(0),
            record.log,
            upto,
            info.fingerprint,
        )
    if saved.get("history"):
        history = History.of_record(saved["history"])
    else:
        history = History.of_config(cfg, population=population)
    record.attempts = list(saved.get("attempts", []))
    member = Member(
        cfg,
        record,
        order,
        start,
        (params, opt_state),
        history,
        last_losses=saved.get("last_losses"),
        spec=spec,
    )
    return member

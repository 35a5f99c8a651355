"""A run's history (sweeper.train.history): what a replay, a resume and the summary read back."""

from __future__ import annotations

from conftest import FAST, compose_config

from sweeper.train.history import Change, Copy, History, Values


def change(step: int, lr: float, reg: float, **optimizer: float) -> Change:
    return Change(step, Values.of(lr, reg, optimizer))


def test_a_config_schedule_becomes_changes_from_step_zero():
    cfg = compose_config(*FAST, "lr=0.001", "reg=0.1", "schedule=[{step: 50, lr: 0.002, reg: 0.2}]")
    history = History.of_config(cfg)
    assert history.schedule == (change(0, 0.001, 0.1), change(50, 0.002, 0.2))
    assert history.lineage is None and history.change_steps() == {50}
    assert history.hyperparameters_at(49, Values.of(9.0, 9.0)) == Values.of(0.001, 0.1)
    assert history.hyperparameters_at(50, Values.of(9.0, 9.0)) == Values.of(0.002, 0.2)
    assert History.of_config(compose_config(*FAST)) == History()  # nothing changes: nothing recorded
    assert History().hyperparameters_at(100, Values.of(0.5, 0.25)) == Values.of(0.5, 0.25)


def test_a_schedule_changes_optimizer_keys_and_keeps_the_others():
    cfg = compose_config(
        *FAST, "optimizer=adam", "schedule=[{step: 50, lr: 0.002, reg: 0.2, optimizer: {b1: 0.8}}]"
    )
    history = History.of_config(cfg)
    assert history.schedule == (
        change(0, 0.001, 0.1, b1=0.9, b2=0.999, eps=1e-8),
        change(50, 0.002, 0.2, b1=0.8, b2=0.999, eps=1e-8),
    )
    assert History.of_record(history.as_record()) == history
    assert history.schedule[1].values.as_dict()["optimizer.b1"] == 0.8


def test_a_population_member_records_its_copies_in_the_plain_format_of_metrics_json():
    root = History.of_config(compose_config(*FAST, "lr=0.001", "reg=0.1"), population=True)
    assert root.as_record() == {"schedule": [{"step": 0, "lr": 0.001, "reg": 0.1}], "lineage": []}
    copied = root.copied(100, Values.of(0.0008, 0.125), "lr=0.001", "exploit").copied(
        200, Values.of(0.001, 0.1), "lr=0.003", "diverged"
    )
    assert copied.schedule == (change(0, 0.001, 0.1), change(100, 0.0008, 0.125), change(200, 0.001, 0.1))
    assert copied.lineage == (Copy(100, "lr=0.001", "exploit"), Copy(200, "lr=0.003", "diverged"))
    assert copied.as_record()["lineage"][1] == {"step": 200, "from": "lr=0.003", "reason": "diverged"}
    # A copy made at a step replaces the changes the source made from that step on.
    assert root.copied(0, Values.of(0.5, 0.5), "x", "exploit").schedule == (change(0, 0.5, 0.5),)
    assert History.of_record(copied.as_record()) == copied
    assert History.of_record({}) == History()


def test_a_record_without_optimizer_values_keeps_the_configs():
    """A history written before changes held optimizer values (lr and reg only) resumes with the config's."""
    old = History.of_record(
        {"schedule": [{"step": 0, "lr": 0.001, "reg": 0.1}, {"step": 50, "lr": 0.002, "reg": 0.2}]}
    )
    default = Values.of(0.001, 0.1, {"momentum": 0.9})
    assert old.hyperparameters_at(60, default) == Values.of(0.002, 0.2, {"momentum": 0.9})

"""A run's history (sweeper.train.history): what a replay, a resume and the summary read back."""

from __future__ import annotations

from conftest import FAST, compose_config

from sweeper.train.history import Change, Copy, History


def test_a_config_schedule_becomes_changes_from_step_zero():
    cfg = compose_config(*FAST, "lr=0.001", "reg=0.1", "schedule=[{step: 50, lr: 0.002, reg: 0.2}]")
    history = History.of_config(cfg)
    assert history.schedule == (Change(0, 0.001, 0.1), Change(50, 0.002, 0.2))
    assert history.lineage is None and history.change_steps() == {50}
    assert history.hyperparameters_at(49, (9.0, 9.0)) == (0.001, 0.1)
    assert history.hyperparameters_at(50, (9.0, 9.0)) == (0.002, 0.2)
    assert History.of_config(compose_config(*FAST)) == History()  # nothing changes: nothing recorded
    assert History().hyperparameters_at(100, (0.5, 0.25)) == (0.5, 0.25)


def test_a_population_member_records_its_copies_in_the_plain_format_of_metrics_json():
    root = History.of_config(compose_config(*FAST, "lr=0.001", "reg=0.1"), population=True)
    assert root.as_record() == {"schedule": [{"step": 0, "lr": 0.001, "reg": 0.1}], "lineage": []}
    copied = root.copied(100, 0.0008, 0.125, "lr=0.001", "exploit").copied(
        200, 0.001, 0.1, "lr=0.003", "diverged"
    )
    assert copied.schedule == (Change(0, 0.001, 0.1), Change(100, 0.0008, 0.125), Change(200, 0.001, 0.1))
    assert copied.lineage == (Copy(100, "lr=0.001", "exploit"), Copy(200, "lr=0.003", "diverged"))
    assert copied.as_record()["lineage"][1] == {"step": 200, "from": "lr=0.003", "reason": "diverged"}
    # A copy made at a step replaces the changes the source made from that step on.
    assert root.copied(0, 0.5, 0.5, "x", "exploit").schedule == (Change(0, 0.5, 0.5),)
    assert History.of_record(copied.as_record()) == copied
    assert History.of_record({}) == History()

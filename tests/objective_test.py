"""Your own objective: objective.metric and objective.mode drive the summary, halving, PBT, pruning and
Optuna; losses are the mean cross-entropy over a whole split; bad objectives are refused in one line."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import FAST, compose_config, job_metrics, run_cli
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sweeper import summary, train
from sweeper.config import ConfigError
from sweeper.objective import Objective
from sweeper.record import checkpoint
from sweeper.task import data
from sweeper.train import fused
from sweeper.train.controllers import AsyncHalving, Halving, PopulationBasedTraining
from sweeper.trial import storage

MIN_LOSS = ["objective.metric=val_loss", "objective.mode=min"]
LRS = ("0.0001", "0.0003", "0.001", "0.003")
NOISY = [*FAST, "data.noise=160", "histograms=false"]


def test_the_objective_ranks_as_its_mode_says_and_failed_runs_report_the_worst():
    accuracy, loss = Objective(), Objective("val_loss", "min")
    assert accuracy.ranking([0.5, 0.7, 0.6]) == [1, 2, 0] and loss.ranking([0.5, 0.7, 0.6]) == [0, 2, 1]
    assert loss.better(0.4, 0.5) and not loss.better(0.5, 0.4) and accuracy.better(0.5, 0.4)
    assert accuracy.worst == 0.0 and loss.worst == math.inf and Objective("train_loss", "max").worst == 0.0
    diverged = {"status": "diverged", "val_accuracy": None, "val_loss": None}
    assert accuracy.value(diverged) == 0.0 and loss.value(diverged) == math.inf
    assert loss.ranking([math.inf, 2.0, math.nan]) == [1, 0, 2]  # inf and NaN never come first
    no_split = {"status": "ok", "val_accuracy": None, "val_loss": None, "test_accuracy": 0.9}
    assert accuracy.value(no_split) is None  # a single run without a validation split: no objective
    assert Objective.of(compose_config()) == accuracy  # the default stays the article's


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["objective.metric=test_accuracy"],
            "objective.metric=test_accuracy is refused: choosing on the test set",
        ),
        (["objective.metric=val_acuracy"], "objective.metric must be one of val_accuracy, val_loss"),
        (["objective.mode=maximum"], "objective.mode must be max or min, got 'maximum'"),
    ],
)
def test_an_objective_sweeper_cannot_optimise_is_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train.train_and_evaluate(compose_config(*FAST, *overrides), tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_val_and_train_losses_are_the_mean_cross_entropy_of_the_whole_split_without_l2(tmp_path):
    metrics = train.train_and_evaluate(compose_config(*FAST, *MIN_LOSS, "reg=1.0"), tmp_path)
    payload = checkpoint.load(tmp_path / "checkpoints" / "step_200.pkl")
    restored, params = train.restore_model(payload, tmp_path)
    graphdef = restored.eval_graphdef
    dataset = data.load(OmegaConf.create(payload["config"])["data"])
    mean_image = np.asarray(payload["mean_image"])

    def mean_cross_entropy(images, labels):  # in float64 numpy, independent of the jitted evaluation
        from flax import nnx

        logits = np.asarray(nnx.merge(graphdef, params)(images.astype(np.float32) - mean_image), np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_softmax[np.arange(len(labels)), labels].mean()

    for split, images, labels in (
        ("val", dataset.val_images, dataset.val_labels),
        ("train", dataset.train_images, dataset.train_labels),
        ("test", dataset.test_images, dataset.test_labels),
    ):
        assert metrics[f"{split}_loss"] == pytest.approx(mean_cross_entropy(images, labels), rel=1e-4), split
    assert metrics["objective"] == metrics["val_loss"]
    assert metrics["loss"] > metrics["train_loss"] + 1.0  # the batch loss keeps the article's L2 term
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    curve = events.Scalars("loss/val")  # each log point, then the final value (what HParams shows)
    assert [e.step for e in curve] == [0, 50, 100, 150, 200]
    assert curve[-1].value == pytest.approx(metrics["val_loss"], rel=1e-6)
    for tag, key in (("loss/test", "test_loss"), ("loss/train_set", "train_loss")):
        assert events.Scalars(tag)[-1].value == pytest.approx(metrics[key], rel=1e-6), tag


def val_loss_at(step: int, *overrides: str, workdir: Path) -> float:
    """A config's validation loss after `step` steps, trained alone."""
    return train.train_and_evaluate(compose_config(*NOISY, *overrides, f"max_steps={step}"), workdir)[
        "val_loss"
    ]


def test_halving_under_min_val_loss_keeps_the_lowest_losses(tmp_path):
    cfgs = [compose_config(*NOISY, *MIN_LOSS, f"lr={lr}") for lr in LRS]
    got = fused.train_group(cfgs, [tmp_path / lr for lr in LRS], halving=Halving(rungs=(50,), keep=0.5))
    at_50 = [val_loss_at(50, *MIN_LOSS, f"lr={lr}", workdir=tmp_path / f"alone{lr}") for lr in LRS]
    kept = sorted(range(4), key=lambda i: at_50[i])[:2]
    assert [m["status"] for m in got] == ["ok" if i in kept else "pruned" for i in range(4)], at_50
    for i in set(range(4)) - set(kept):
        assert got[i]["objective"] == got[i]["val_loss"] == pytest.approx(at_50[i], rel=1e-4)


def test_asynchronous_halving_under_min_val_loss_promotes_the_lowest_losses(tmp_path):
    grid = [(f"lr={lr}", f"reg={reg}") for lr in LRS for reg in ("0.1", "1.0")]
    cfgs = [compose_config(*NOISY, *MIN_LOSS, *o) for o in grid]
    workdirs = [tmp_path / f"job{i}" for i in range(len(grid))]
    got = fused.train_group(
        cfgs, workdirs, max_batch=2, halving=AsyncHalving((100,), 0.5, tmp_path / "r.jsonl")
    )
    arrivals = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    values = {a["job"]: a["value"] for a in arrivals}  # each member's val loss at the rung
    by_job = dict(zip((w.name for w in workdirs), got, strict=True))
    arrived: dict[int, list[str]] = {}
    for job, metrics in by_job.items():
        arrived.setdefault(metrics["timings"]["pool"]["joined"] + 100, []).append(job)
    seen: dict[str, float] = {}
    for step in sorted(arrived):  # replay the rule under min: a member goes on if few had lower losses
        seen |= {job: values[job] for job in arrived[step]}
        for job in arrived[step]:
            promoted = sum(v < values[job] for v in seen.values()) < math.ceil(0.5 * len(seen))
            assert by_job[job]["status"] == ("ok" if promoted else "pruned"), job
    assert {m["status"] for m in got} == {"ok", "pruned"}


def test_pbt_under_min_val_loss_copies_the_lowest_loss_into_the_highest(tmp_path):
    grid = [(f"lr={lr}", f"reg={reg}") for lr, reg in zip(LRS, ("0.1", "1.0", "0.1", "1.0"), strict=True)]
    cfgs = [compose_config(*NOISY, *MIN_LOSS, *o, "max_steps=100") for o in grid]
    workdirs = [tmp_path / f"m{i}" for i in range(4)]
    pbt = PopulationBasedTraining(interval=50, quantile=0.25, factors=(0.8, 1.25), seed=0)
    got = fused.train_group(cfgs, workdirs, pbt=pbt)
    at_50 = [val_loss_at(50, *MIN_LOSS, *o, workdir=tmp_path / f"alone{i}") for i, o in enumerate(grid)]
    copies = [
        (i, m["lineage"][0]) for i, m in enumerate(got) if m["lineage"] and m["lineage"][0]["step"] == 50
    ]
    assert len(copies) == 1, got  # a quarter of four: one member copies one
    target, entry = copies[0]
    assert target == int(np.argmax(at_50)) and entry["from"] == f"m{int(np.argmin(at_50))}", at_50


@pytest.mark.slow
def test_a_sweep_ranks_by_min_val_loss_prints_its_best_command_and_ranks_a_diverged_run_last(tmp_path):
    args = ["-m", *FAST, *MIN_LOSS, "lr=0.0003,0.001,0.003,1000", f"hydra.sweep.dir={tmp_path}"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    metrics = job_metrics(tmp_path)
    diverged = metrics["lr=1000"]
    assert diverged["status"] == "diverged" and diverged["objective"] == math.inf
    finite = {name: m["val_loss"] for name, m in metrics.items() if m["status"] == "ok"}
    best = min(finite, key=finite.get)
    assert max(finite, key=finite.get) != best  # the losses differ: the order means something
    with open(tmp_path / "summary.csv") as f:
        ranked = [f"lr={row['lr']}" for row in csv.DictReader(f)]
    assert ranked == [*sorted(finite, key=finite.get), "lr=1000"]
    shown = result.stdout.split(f"Best config (val loss {finite[best]:.4f}):\n")[1].splitlines()[0]
    assert shown.startswith("    python run.py ") and f" {best} " in f"{shown} "
    assert "ranked by val loss (min)" in (tmp_path / "summary.md").read_text()
    assert not any("objective" in p.name for p in tmp_path.iterdir())  # not a hyperparameter: no folder name


@pytest.mark.slow
def test_an_optuna_study_under_min_minimises_and_a_contradicting_direction_is_refused(tmp_path):
    args = ["-m", "sweep=optuna", *FAST, *MIN_LOSS, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null"]
    result = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'study'}")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(
        study_name="sweeper", storage=storage(str(tmp_path / "study" / "optuna.journal"))
    )
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    losses = {m["val_loss"] for m in job_metrics(tmp_path / "study").values()}
    assert {t.value for t in study.trials} == losses

    refused = run_cli(*args, "hydra.sweeper.direction=maximize", f"hydra.sweep.dir={tmp_path / 'refused'}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: hydra.sweeper.direction=maximize contradicts objective.mode=min: set one of them, or leave "
        "hydra.sweeper.direction unset to follow objective.mode"
    ]
    assert not (tmp_path / "refused" / "optuna.journal").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.val_size=0", "lr=0.001,0.003"],
            "objective.metric=val_accuracy ranks a sweep on the validation",
        ),
        (
            ["objective.metric=val_loss,train_loss", "objective.mode=min"],
            "objective.metric is what the sweep",
        ),
        (["objective.metric=test_loss", "lr=0.001,0.003"], "objective.metric=test_loss is refused"),
    ],
)
@pytest.mark.slow
def test_a_sweep_its_objective_cannot_rank_is_refused_before_it_launches(tmp_path, overrides, message):
    result = run_cli("-m", *FAST, *overrides, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*/metrics.json"))  # no job ran


def test_a_single_run_without_a_validation_split_runs_and_reports_no_objective(tmp_path):
    metrics = train.train_and_evaluate(compose_config(*FAST, "data.val_size=0"), tmp_path)
    assert metrics["status"] == "ok" and metrics["val_accuracy"] is None and metrics["objective"] is None
    assert metrics["test_accuracy"] > 0.2
    assert json.loads((tmp_path / "metrics.json").read_text())["objective"] is None


def test_the_summary_ranks_by_the_objective_and_shows_its_column(tmp_path):
    for i, (lr, loss) in enumerate([("0.1", 0.9), ("0.2", 0.5), ("0.3", 0.7), ("0.4", 0.6)]):
        folder = tmp_path / f"lr={lr}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- lr={lr}\n- hidden={60 * (1 + i % 2)}\n")
        metrics = {"status": "ok", "steps": 10, "val_accuracy": 0.5, "test_accuracy": 0.5, "val_loss": loss}
        (folder / "metrics.json").write_text(json.dumps(metrics | {"objective": loss}))
    record = {
        "objective": {"metric": "val_loss", "mode": "min"},
        "hydra": {"sweeper": {"params": None}, "overrides": {"task": ["lr=0.1,0.2,0.3,0.4"]}},
    }
    OmegaConf.save(OmegaConf.create(record), tmp_path / "multirun.yaml")
    rows = summary.summarize(tmp_path, echo=False)
    assert [r.params["lr"] for r in rows] == ["0.2", "0.4", "0.3", "0.1"]
    assert summary.command_for(rows[0]).startswith("python run.py lr=0.2")
    table = (tmp_path / "summary.md").read_text()
    assert "ranked by val loss (min)" in table and "| val loss |" in table and "| 0.5000 |" in table
    with open(tmp_path / "summary.csv") as f:
        assert [row["val_loss_mean"] for row in csv.DictReader(f)] == ["0.5", "0.6", "0.7", "0.9"]

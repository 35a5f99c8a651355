"""Finding the best config sooner: Optuna pruning in every launcher, halving across widths, PBT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import FAST, compose_config, job_metrics, killed_and_rerun, results, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from sweeper import summary, train
from sweeper.record import checkpoint
from sweeper.train import fused
from sweeper.train.controllers import Halving, PopulationBasedTraining
from sweeper.trial import storage

ACCURACY_TOL, LOSS_RTOL = 0.01, 1e-4  # as fused_test: vmapped sums may differ in the last bits


def session_end(folder: Path) -> tuple[int, str]:
    """The HParams session a job folder holds: (its session status, its `status` hyperparameter)."""
    events = EventAccumulator(str(folder))
    events.Reload()
    end = events.SummaryMetadata("_hparams_/session_end_info").plugin_data.content
    start = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    status = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams["status"]
    return plugin_data_pb2.HParamsPluginData.FromString(end).session_end_info.status, status.string_value


LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit": ["hydra/launcher=submitit_local"],
    "fused": ["hydra/launcher=fused", "hydra.launcher.widths=pad"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS, ids=list(LAUNCHERS))
def test_optuna_prunes_trials_in_every_launcher_and_records_them_everywhere(tmp_path, launcher):
    # A pruner that stops every trial at its first report after step 100: the plumbing, deterministically.
    pruner = [
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=1.01",
        "hydra.sweeper.pruner.n_warmup_steps=100",
    ]
    args = ["-m", "sweep=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", *FAST]
    args = [a for a in args if not a.startswith("hidden=")] + ["max_steps=300", "histograms=false"]
    result = run_cli(*args, *pruner, *LAUNCHERS[launcher], f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="sweeper", storage=storage(str(tmp_path / "optuna.journal")))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 3
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [50, 100]  # reported at every log point
    metrics = job_metrics(tmp_path)
    assert len(metrics) == 3
    for name, m in metrics.items():
        assert m["status"] == "pruned" and m["steps"] == 100 and m["val_accuracy"] is not None
        assert (tmp_path / name / "checkpoints" / "step_100.pkl").is_file()
        assert session_end(tmp_path / name) == (api_pb2.STATUS_UNKNOWN, "pruned")
    assert {t.value for t in study.trials} == {m["val_accuracy"] for m in metrics.values()}
    assert "3 pruned" in (tmp_path / "summary.md").read_text()


def test_successive_halving_ranks_every_width_together(tmp_path):
    widths, lrs = (16, 32), ("0.0003", "0.001", "0.003", "0.01")
    cfgs = [compose_config(*FAST, f"hidden={h}", f"lr={lr}", "max_steps=100") for h in widths for lr in lrs]
    workdirs = [tmp_path / f"h{h}-lr{lr}" for h in widths for lr in lrs]
    got = fused.train_group(cfgs, workdirs, widths="group", halving=Halving((50,), keep=0.3))
    # ceil(0.3 * 8) = 3 go on; ranking each width alone would keep ceil(0.3 * 4) = 2 of each.
    assert sorted(m["status"] for m in got) == ["ok"] * 3 + ["pruned"] * 5
    assert {m["timings"]["fused_jobs"] for m in got} == {4}  # two programs, one per width
    survivors = [d for d, m in zip(workdirs, got, strict=True) if m["status"] == "ok"]
    pruned = [m["val_accuracy"] for m in got if m["status"] == "pruned"]
    for workdir in survivors:  # ranked on the val accuracy of their checkpoint at the rung
        payload = checkpoint.load(workdir / "checkpoints" / "step_50.pkl")
        val = fused_val(payload, workdir)
        assert val >= max(pruned)


def fused_val(payload: dict, workdir: Path) -> float:
    """The val accuracy of a checkpoint's parameters, on the data of the config it holds."""
    from omegaconf import OmegaConf

    from sweeper.task import data, train_step
    from sweeper.train.run import restore_model

    restored, params = restore_model(payload, workdir)
    dataset = data.load(OmegaConf.create(payload["config"])["data"])
    return train_step.accuracy(
        restored.eval_graphdef, params, dataset.val_images, dataset.val_labels, payload["mean_image"]
    )


PBT_GRID = [
    ("lr=0.0001", "reg=0.1"),
    ("lr=0.0003", "reg=1.0"),
    ("lr=0.001", "reg=0.1"),
    ("lr=0.003", "reg=1.0"),
]
NOISY = [*FAST, "data.noise=160", "max_steps=200", "histograms=false"]


def test_pbt_copies_members_exactly_and_a_schedule_replays_its_member(tmp_path):
    cfgs = [compose_config(*NOISY, *o) for o in PBT_GRID]
    workdirs = [tmp_path / f"m{i}" for i in range(4)]
    pbt = PopulationBasedTraining(interval=50, quantile=0.25, factors=(0.8, 1.25), seed=0)
    got = fused.train_group(cfgs, workdirs, pbt=pbt)
    names = {w.name: w for w in workdirs}
    # A member's last lineage entry is its own latest copy (the earlier ones came with its source).
    copies = [(w, m["lineage"][-1]) for w, m in zip(workdirs, got, strict=True) if m["lineage"]]
    assert copies, "no member copied another"
    for workdir, entry in copies:
        step_file = f"step_{entry['step']}.pkl"
        a, b = (checkpoint.load(d / "checkpoints" / step_file) for d in (workdir, names[entry["from"]]))
        for x, y in zip(jax_leaves(a["params"]), jax_leaves(b["params"]), strict=True):
            np.testing.assert_array_equal(x, y)  # the copy is exact: no file, a gather on the member axis
        for x, y in zip(a["opt_state"], b["opt_state"], strict=True):
            np.testing.assert_array_equal(x, y)
    for m in got:
        schedule = m["schedule"]
        assert schedule[0]["step"] == 0 and [c["step"] for c in schedule] == sorted(
            {c["step"] for c in schedule}
        )

    best = max(range(4), key=lambda i: got[i]["val_accuracy"])
    schedule = got[best]["schedule"]
    first, changes = (
        schedule[0],
        [f"{{step:{c['step']},lr:{c['lr']!r},reg:{c['reg']!r}}}" for c in schedule[1:]],
    )
    replay_cfg = compose_config(
        *NOISY, f"lr={first['lr']!r}", f"reg={first['reg']!r}", f"schedule=[{','.join(changes)}]"
    )
    replay = train.train_and_evaluate(replay_cfg, tmp_path / "replay")
    for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
        assert replay[key] == pytest.approx(got[best][key], abs=ACCURACY_TOL), key
    assert replay["loss"] == pytest.approx(got[best]["loss"], rel=LOSS_RTOL)
    assert replay["schedule"] == schedule


def jax_leaves(tree: dict) -> list:
    return [tree[layer][name] for layer in ("layer1", "layer2") for name in ("kernel", "bias")]


@pytest.mark.slow
def test_a_killed_pbt_sweep_resumes_to_the_uninterrupted_population(tmp_path):
    args = ["-m", "sweep=pbt", *NOISY, "max_steps=300", "hidden=16", "hydra.launcher.pbt.interval=50"]
    args += ["lr=0.0001,0.0003,0.001,0.003", "reg=0.1,1.0"]
    whole, killed, _, _ = killed_and_rerun(args, tmp_path, "*/checkpoints/step_150.pkl", 8)
    expected, got = job_metrics(whole), job_metrics(killed)
    assert got.keys() == expected.keys() and len(got) == 8
    for name in expected:
        assert results(got[name]) == results(expected[name]), name  # lineage and schedule included
    best = summary.summarize(killed, echo=False)[0]
    assert "schedule=[" in summary.command_for(best)


def test_a_population_killed_between_two_checkpoints_resumes_from_the_step_all_reached(tmp_path):
    cfgs = [compose_config(*NOISY, *o, "max_steps=100") for o in PBT_GRID]
    workdirs = [tmp_path / f"m{i}" for i in range(4)]
    pbt = PopulationBasedTraining(interval=50, quantile=0.25, factors=(0.8, 1.25), seed=0)
    whole = fused.train_group(cfgs, workdirs, pbt=pbt)
    for workdir in workdirs:  # as if SIGKILL came while the checkpoints at step 100 were being written
        (workdir / "metrics.json").unlink()
    (workdirs[0] / "checkpoints" / "step_100.pkl").unlink()
    resumed = fused.train_group(
        [compose_config(*NOISY, *o, "max_steps=100", "resume=true") for o in PBT_GRID], workdirs, pbt=pbt
    )
    for before, after in zip(whole, resumed, strict=True):
        assert results(after) == results(before)
    assert {m["timings"]["fused_jobs"] for m in resumed} == {4}  # still one program

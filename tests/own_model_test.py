"""Your own model: a Flax NNX module outside the package (examples/own_model's ConvNet, with BatchNorm and
Dropout, and a paddable module written here), through single runs, fused programs, halving, population-based
training, evaluation from a checkpoint, and each bad input's one line."""

from __future__ import annotations

import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_config, job_metrics, run_cli

from sweeper import checks, summary, train
from sweeper.config import ConfigError
from sweeper.record import checkpoint
from sweeper.status import Status
from sweeper.task import data, train_step
from sweeper.train import fused
from sweeper.train.controllers import Halving, PopulationBasedTraining

EXAMPLE = ROOT / "examples" / "own_model"
TOLERANCE = 1e-5

# A module of the user's with a paddable axis (`width`), written into the test's own folder.
WIDE_MODELS = """
from flax import nnx
import jax


class Wide(nnx.Module):
    def __init__(self, width, *, input_shape, num_classes, rngs):
        size = 1
        for n in input_shape:
            size *= n
        self.inner = nnx.Linear(size, width, rngs=rngs, kernel_metadata={"paddable": (None, "width")},
                                bias_metadata={"paddable": ("width",)})
        self.outer = nnx.Linear(width, num_classes, rngs=rngs, kernel_metadata={"paddable": ("width", None)})

    def __call__(self, x):
        return self.outer(jax.nn.relu(self.inner(x.reshape(x.shape[0], -1))))


class Unmarked(Wide):
    def __init__(self, width, *, input_shape, num_classes, rngs):
        super().__init__(width, input_shape=input_shape, num_classes=num_classes, rngs=rngs)
        self.inner.bias = nnx.Param(self.inner.bias[...])  # resized by `width`, not marked


class ThreeOutputs(nnx.Module):
    def __init__(self, *, input_shape, num_classes, rngs):
        self.out = nnx.Linear(input_shape[-1], 3, rngs=rngs)

    def __call__(self, x):
        return self.out(x.reshape(x.shape[0], -1, x.shape[-1]).mean(axis=1))
"""


def write_tiny(path: Path) -> Path:
    """Tiny 8x8 colour images of 4 classes (a colour each, plus noise) in an .npz: 300 train, 100 test."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 4, n)
        colours = np.array([[200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60]])
        images = colours[labels][:, None, None, :] + rng.normal(0, 70, (n, 8, 8, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = split(300), split(100)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def user_folder(tmp_path, monkeypatch) -> Path:
    """The user's folder: the tiny .npz, their models importable."""
    write_tiny(tmp_path / "tiny.npz")
    (tmp_path / "wide_models.py").write_text(textwrap.dedent(WIDE_MODELS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return tmp_path


def cnn(folder: Path, *overrides: str):
    """The example's ConvNet on the tiny data: a few seconds a run."""
    return compose_config(
        f"hydra.searchpath=[file://{EXAMPLE / 'my_conf'}]",
        "model=convnet",
        "model.channels=4",
        "data=npz",
        f"data.path={folder / 'tiny.npz'}",
        "data.val_size=60",
        "data.preprocess=standardize",
        "optimizer=momentum",
        "lr=0.05",
        "reg=0.0001",
        "batch_size=20",
        "max_steps=60",
        "log_every=20",
        "checkpoint_every=60",
        "histograms=false",
        *overrides,
    )


# A shape key (two programs) and an optimizer key (two members of one program).
GRID = [("model.channels=4", "optimizer.momentum=0.8"), ("model.channels=4", "optimizer.momentum=0.9")]
GRID += [("model.channels=8", "optimizer.momentum=0.9")]


def test_fused_over_a_shape_key_and_an_optimizer_key_equals_each_run_alone(user_folder):
    cfgs = [cnn(user_folder, *o) for o in GRID]
    workdirs = [user_folder / "fused" / str(i) for i in range(len(GRID))]
    got = fused.train_group(cfgs, workdirs, widths="group", max_batch=4)  # fused, as on an accelerator
    for i, cfg in enumerate(cfgs):
        alone = train.train_and_evaluate(cfg, user_folder / "alone" / str(i))
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "val_loss"):
            assert got[i][key] == pytest.approx(alone[key], abs=TOLERANCE), (GRID[i], key)
    assert got[0]["val_accuracy"] > 0.4  # it learns (4 classes: chance is 0.25)
    assert len({round(m["val_loss"], 6) for m in got}) == len(GRID)  # every config trained its own way


def test_a_paddable_module_shares_one_program_and_pads_exactly(user_folder):
    cfgs = [user_model(user_folder, "Wide", f"+model.width={w}", f"lr={lr}") for w, lr in WIDE_GRID]
    planned = fused.plan(cfgs, pad_widths=True, max_batch=None)
    assert len(planned.groups) == 1 and planned.widest(planned.groups[0]) == {"width": 16}
    got = fused.train_group(cfgs, [user_folder / "padded" / str(i) for i in range(3)], widths="pad")
    for i, cfg in enumerate(cfgs):
        alone = train.train_and_evaluate(cfg, user_folder / "alone" / str(i))
        assert got[i]["val_accuracy"] == pytest.approx(alone["val_accuracy"], abs=TOLERANCE)
        assert got[i]["loss"] == pytest.approx(alone["loss"], rel=1e-4)
    narrow = checkpoint.load(user_folder / "padded" / "0" / "checkpoints" / "step_60.pkl")
    assert narrow["params"]["inner"]["kernel"].shape == (192, 8)  # saved at its own width


WIDE_GRID = ((8, "0.02"), (16, "0.02"), (16, "0.05"))


def user_model(folder: Path, name: str, *overrides: str):
    """`cnn` with another module of wide_models in place of the ConvNet."""
    return cnn(folder, f"model._target_=wide_models.{name}", "~model.channels", "~model.dropout", *overrides)


def val_at(workdir: Path, step: int) -> float:
    """A member's val accuracy at `step`, from its checkpoint alone (its model rebuilt from the file)."""
    payload = checkpoint.load(workdir / "checkpoints" / f"step_{step}.pkl")
    model, params = train.restore_model(payload, workdir)
    dataset = data.load(checkpoint_data_cfg(payload))
    norm = (payload["mean_image"], payload["scale"])
    return train_step.accuracy(model.eval_graphdef, params, dataset.val_images, dataset.val_labels, norm)


def checkpoint_data_cfg(payload: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(payload["config"]["data"])


def test_halving_keeps_the_members_best_at_each_rung(user_folder):
    lrs = ("0.005", "0.02", "0.05", "0.1")
    workdirs = [user_folder / f"lr={lr}" for lr in lrs]
    got = fused.train_group(
        [cnn(user_folder, f"lr={lr}") for lr in lrs], workdirs, halving=Halving((20, 40), 0.5)
    )
    assert sorted(m["steps"] for m in got) == [20, 20, 40, 60]
    pruned = [d for d, m in zip(workdirs, got, strict=True) if m["steps"] == 20]
    kept = [d for d, m in zip(workdirs, got, strict=True) if m["steps"] > 20]
    assert min(val_at(d, 20) for d in kept) >= max(val_at(d, 20) for d in pruned)


def test_pbt_perturbs_an_optimizer_key_and_its_best_member_replays_as_one_run(user_folder):
    lrs = ("0.005", "0.02", "0.05", "0.1")
    cfgs = [cnn(user_folder, f"lr={lr}") for lr in lrs]
    perturb = ("lr", "optimizer.momentum")
    pbt = PopulationBasedTraining(interval=20, quantile=0.25, factors=(0.8, 1.1), seed=0, perturb=perturb)
    got = fused.train_group(cfgs, [user_folder / f"m{i}" for i in range(4)], pbt=pbt)
    copied = [m for m in got if m["lineage"]]
    assert copied, "no member copied another"
    # Up to the first exploit the population trained as a plain group: that group's val accuracy at step 20
    # ranks the members as PBT saw them; the worst copied the best.
    before = fused.train_group(
        [cnn(user_folder, f"lr={lr}", "max_steps=20") for lr in lrs],
        [user_folder / f"b{i}" for i in range(4)],
    )
    at_20 = {f"m{i}": m["val_accuracy"] for i, m in enumerate(before)}
    # A member's last lineage entry is its own latest copy (the earlier ones came with its source).
    own = [(f"m{i}", m["lineage"][-1]) for i, m in enumerate(got) if m["lineage"]]
    first = [(name, copy) for name, copy in own if copy["step"] == 20]
    assert first, "no copy at the first exploit"
    for name, copy in first:
        assert at_20[name] == min(at_20.values()) and at_20[copy["from"]] == max(at_20.values())
    changes = [c for m in copied for c in m["schedule"][1:]]
    assert {c["optimizer"]["momentum"] for c in changes} - {0.9}, "momentum never perturbed"
    best = max(range(4), key=lambda i: got[i]["val_accuracy"])
    schedule = got[best]["schedule"]
    first = schedule[0]
    # The sweep summary's replay command, as a user would paste it: its overrides compose the replay.
    job = summary.JobResult("best", [f"lr={lrs[best]}"], {}, got[best], Status.OK)
    command = shlex.split(summary.replay_command(job))
    assert command[:2] == ["python", "run.py"] and "optimizer.momentum=" in " ".join(command)
    replay_cfg = cnn(user_folder, *command[2:])
    replay = train.train_and_evaluate(replay_cfg, user_folder / "replay")
    for key in ("val_accuracy", "test_accuracy"):
        assert replay[key] == pytest.approx(got[best][key], abs=TOLERANCE), key
    assert replay["schedule"] == schedule


def test_eval_rebuilds_the_model_from_the_checkpoint_and_reproduces_test_accuracy(user_folder):
    metrics = train.train_and_evaluate(cnn(user_folder), user_folder / "run")
    default = compose_config("mode=eval", f"checkpoint={user_folder / 'run'}")  # the MLP, CIFAR-10 by default
    evaluated = train.evaluate_checkpoint(default, user_folder / "run")
    assert evaluated["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=TOLERANCE)
    assert evaluated["channels"] == 4 and evaluated["step"] == 60
    payload = checkpoint.load(checkpoint.latest(user_folder / "run" / "checkpoints"))
    assert payload["model"]["config"]["_target_"] == "my_models.ConvNet"
    assert payload["model"]["input_shape"] == [8, 8, 3] and payload["model"]["num_classes"] == 4
    assert "mean" in payload["params"]["norm1"]  # BatchNorm's running statistics are kept


def test_graph_histograms_and_resume_of_a_cnn(user_folder):
    from graph_test import graph_of
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = user_folder / "run"
    train.train_and_evaluate(cnn(user_folder, "max_steps=40", "histograms=true", "checkpoint_every=20"), run)
    graph = graph_of(run)
    scopes = {name.split("/", 1)[0] for name in graph}
    assert {"block1", "block2", "head", "loss", "optimizer", "gradients"} <= scopes  # the module's own scopes
    assert graph["conv1/kernel"][::2] == ("Parameter", [[3, 3, 3, 4]])
    events = EventAccumulator(str(run), size_guidance={"histograms": 0})
    events.Reload()
    tags = set(events.Tags()["histograms"])
    assert {f"tensors/{t}" for t in ("weights/conv1/kernel", "weights/norm1/mean", "logits")} <= tags
    # Resumed from step 20 to 60, it ends where a straight run to 60 does (BatchNorm and Dropout state too).
    resumed = train.train_and_evaluate(cnn(user_folder, "resume=true"), run)
    straight = train.train_and_evaluate(cnn(user_folder), user_folder / "straight")
    for key in ("loss", "val_accuracy", "test_accuracy", "val_loss"):
        assert resumed[key] == pytest.approx(straight[key], abs=TOLERANCE), key


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ("model._target_=nowhere.Model",),
            r"model._target_ 'nowhere.Model' cannot be imported .*PYTHONPATH",
        ),
        (("model._target_=collections.OrderedDict",), r"is not a flax.nnx.Module class"),
        (("+model.colours=3",), r"model: ConvNet\(.*colours=3.*\) was refused: .*colours"),
        (("+model.num_classes=5",), r"model.num_classes is a reserved name"),
        (("hidden=64",), r"hidden sets the width of model=mlp"),
        (("ThreeOutputs",), r"returns \(2, 3\) .*\(N, num_classes\) = \(2, 4\)"),
        (("Unmarked", "+model.width=8"), r"inner.bias changes with model.width along axis 0"),
    ],
)
def test_each_bad_model_is_refused_in_one_line_before_anything_trains(user_folder, overrides, message):
    own = overrides[0][:1].isupper()  # a module of wide_models
    cfg = user_model(user_folder, *overrides) if own else cnn(user_folder, *overrides)
    with pytest.raises(ConfigError, match=message) as error:
        checks.validate(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_example_runs_as_its_readme_says(tmp_path):
    """examples/own_model: its data, a single run, a fused sweep over a shape key and an optimizer key."""
    data = ["--train", "400", "--test", "100", "--out", str(tmp_path / "shapes.npz")]
    made = subprocess.run(
        [sys.executable, "make_data.py", *data], cwd=EXAMPLE, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    common = ["--config-dir", "my_conf", "+experiment=convnet", f"data.path={tmp_path / 'shapes.npz'}"]
    common += ["data.val_size=100", "max_steps=40", "log_every=20", "checkpoint_every=40"]
    env = {"PYTHONPATH": "."}
    single = run_cli(*common, f"hydra.run.dir={tmp_path / 'run'}", cwd=EXAMPLE, env=env)
    assert single.returncode == 0, single.stderr
    assert "test accuracy" in single.stdout + single.stderr
    sweep = run_cli(
        "-m",
        *common,
        "model.channels=4,8",
        "optimizer.momentum=0.8,0.9",
        "hydra/launcher=fused",
        "hydra.launcher.max_batch=4",  # a CPU trains a convolutional model one config at a time, unless told
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=EXAMPLE,
        env=env,
    )
    assert sweep.returncode == 0, sweep.stderr
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").exists())
    assert jobs == [f"model.channels={c},optimizer.momentum={m}" for c in (4, 8) for m in (0.8, 0.9)]
    assert "fused with 2 jobs in one program" in (tmp_path / "sweep" / jobs[0] / "run.log").read_text()
    # The summary's best command starts the run as the sweep did: the user's module and config folder.
    assert "PYTHONPATH=. python run.py --config-dir my_conf +experiment=convnet" in sweep.stdout
    bad = run_cli("--config-dir", "my_conf", "model=convnet", "model._target_=nowhere.Net", cwd=EXAMPLE)
    assert bad.returncode == 2 and "PYTHONPATH" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_optuna_study_searches_your_models_keys_through_the_fused_pool(tmp_path):
    import optuna

    from sweeper.trial import storage

    write_tiny(tmp_path / "tiny.npz")
    args = ["-m", "--config-dir", str(EXAMPLE / "my_conf"), "model=convnet", "data=npz", "data.path=tiny.npz"]
    args += ["data.val_size=60", "batch_size=20", "max_steps=40", "log_every=20", "histograms=false"]
    args += ["hydra/sweeper=sweeper_optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    args += ["hydra/launcher=fused", "model.channels=choice(4,8)", "lr=tag(log,interval(0.01,0.1))"]
    result = run_cli(
        *args, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, env={"PYTHONPATH": str(EXAMPLE)}
    )
    assert result.returncode == 0, result.stderr
    journal = storage(str(tmp_path / "sweep" / "optuna.journal"))
    (name,) = optuna.get_all_study_names(journal)
    study = optuna.load_study(study_name=name, storage=journal)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert {t.params["model.channels"] for t in study.trials} <= {4, 8}
    values = sorted(t.value for t in study.trials)
    assert values == sorted(m["val_accuracy"] for m in job_metrics(tmp_path / "sweep").values())


def test_pbt_refuses_to_perturb_a_key_that_is_not_dynamic(user_folder):
    pbt = PopulationBasedTraining(
        interval=20, quantile=0.25, factors=(0.8,), seed=0, perturb=("optimizer.nesterov",)
    )
    with pytest.raises(
        ConfigError,
        match=r"pbt.perturb: optimizer.nesterov is not a key it can perturb \(lr, reg, optimizer.momentum\)",
    ):
        fused.plan(
            [cnn(user_folder), cnn(user_folder, "lr=0.01")],
            pad_widths=False,
            max_batch=None,
            search=fused.Search(None, pbt),
        )


def test_a_segment_stepped_from_python_equals_the_scanned_one(user_folder):
    """On a CPU a convolutional model's segment runs as a loop over one jitted step (it is far faster
    there): it computes what the scanned segment does."""
    import jax
    import jax.numpy as jnp

    from sweeper.task import models

    cfg = cnn(user_folder)
    info = data.describe(cfg.data)
    spec = models.of_config(cfg, info)
    model = models.abstract(spec)
    assert (
        model.convolutional
        and not models.abstract(
            models.Spec("sweeper.task.model.MLP", (("hidden", 8),), (192,), "float32", 4)
        ).convolutional
    )
    dataset = train_step.to_device(data.load(cfg.data))
    make_optimizer = train_step.optimizer_factory(cfg.optimizer)
    hyper = train_step.Hyper(
        jnp.float32(0.05), jnp.float32(1e-4), train_step.optimizer_values(cfg.optimizer), None
    )
    batches = np.arange(5 * 20).reshape(5, 20)
    ends = []
    for scan in (True, False):
        state, _ = train_step.init_run(spec, 0)
        opt_state = train_step.init_optimizer(cfg.optimizer, state)
        start = train_step.TrainState(state, opt_state, jnp.bool_(True), np.int32(0))
        segment = train_step.make_segment(model.graphdef, model.padding, make_optimizer, False, scan)
        compiled = segment.lower(start, hyper, dataset.train, batches).compile()
        end, (losses, _) = compiled(start, hyper, dataset.train, batches)
        ends.append((jax.device_get(end.params), np.asarray(losses)))
    (scanned, scanned_losses), (stepped, stepped_losses) = ends
    assert stepped_losses.shape == scanned_losses.shape == (5,)
    np.testing.assert_allclose(stepped_losses, scanned_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(stepped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_on_a_cpu_a_convolutional_model_trains_one_config_at_a_time_unless_told(user_folder):
    cfgs = [cnn(user_folder, *o) for o in GRID]
    on_cpu = fused.plan(cfgs, pad_widths=False, max_batch=None, accelerator=False)
    assert [len(g) for g in on_cpu.groups] == [1, 1, 1]  # faster one at a time there (make bench-model)
    assert not on_cpu.without_singles().groups  # the fused launcher runs them as the basic launcher does
    assert sorted(
        len(g) for g in fused.plan(cfgs, pad_widths=False, max_batch=None, accelerator=True).groups
    ) == [1, 2]
    assert sorted(
        len(g) for g in fused.plan(cfgs, pad_widths=False, max_batch=4, accelerator=False).groups
    ) == [1, 2]
    wide = [user_model(user_folder, "Wide", f"+model.width={w}", f"lr={lr}") for w, lr in WIDE_GRID]
    assert (
        len(fused.plan(wide, pad_widths=True, max_batch=None, accelerator=False).groups) == 1
    )  # no convolution

"""The real configs compose with the article's defaults; bad values fail in one line naming the key."""

from __future__ import annotations

import pytest
from conftest import compose_config, run_cli
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from sweeper import config
from sweeper.checks import validate
from sweeper.config import ConfigError


def test_defaults_are_the_articles():
    cfg = compose_config()
    assert (cfg.hidden, cfg.lr, cfg.reg, cfg.batch_size, cfg.max_steps) == (120, 0.001, 0.1, 400, 2000)
    assert (cfg.log_every, cfg.checkpoint_every) == (100, 1000)
    assert cfg.data.name == "cifar10" and cfg.data.val_size == 5000 and cfg.optimizer.name == "sgd"
    assert cfg.data.md5 == "c58f30108f718f92721af3b95e74349a"
    validate(cfg)


@pytest.mark.parametrize(
    "group,keys",
    [
        ("optimizer=momentum", {"momentum": 0.9, "nesterov": False}),
        ("optimizer=adam", {"b1": 0.9, "b2": 0.999}),
    ],
)
def test_optimizer_groups(group, keys):
    cfg = compose_config(group)
    assert {k: cfg.optimizer[k] for k in keys} == keys


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPER_DATA_DIR", str(tmp_path))
    assert compose_config().data.root == str(tmp_path)
    monkeypatch.delenv("SWEEPER_DATA_DIR")
    assert compose_config().data.root == "~/.cache/sweeper/cifar10"


@pytest.mark.parametrize(
    "override,key",
    [
        ("hidden=0", "hidden"),
        ("lr=0", "lr"),
        ("lr=-0.1", "lr"),
        ("lr=nan", "lr"),
        ("lr=inf", "lr"),
        ("reg=-1", "reg"),
        ("batch_size=0", "batch_size"),
        ("batch_size=45001", "batch_size"),
        ("max_steps=0", "max_steps"),
        ("log_every=0", "log_every"),
        ("seed=-1", "seed"),
        ("data.val_size=50000", "data.val_size"),
        ("data.val_size=-1", "data.val_size"),
        ("checkpoint_every=0", "checkpoint_every"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key} must be "):
        validate(compose_config(override))


def test_batch_size_may_equal_the_training_set():
    validate(compose_config("batch_size=45000"))
    validate(compose_config("batch_size=50000", "data.val_size=0"))


def test_wrong_types_and_unknown_keys_are_refused_by_the_schema():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("hidden=abc")
    assert isinstance(error.value.__cause__, ValidationError)
    with pytest.raises(ConfigCompositionException, match="hiden"):
        compose_config("hiden=60")
    with pytest.raises(ConfigCompositionException, match="momentum"):
        compose_config("optimizer.momentum=0.5")  # sgd has no momentum


@pytest.mark.parametrize(
    "args,needle",
    [
        (["hidden=abc"], "hidden=abc"),
        (["hiden=60"], "hiden"),
        (["lr=-1"], "lr must be > 0"),
        (["optimizer=rmsprop"], "optimizer"),
        (["mode=eval"], "checkpoint must be"),
    ],
)
@pytest.mark.slow
def test_cli_reports_bad_input_in_one_line(tmp_path, args, needle):
    result = run_cli(*args, f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_cli_help_lists_keys_and_groups():
    result = run_cli("--help")
    assert result.returncode == 0
    for needle in (
        "hidden: 120",
        "lr: 0.001",
        "reg: 0.1",
        "batch_size: 400",
        "max_steps: 2000",
        "log_every: 100",
        "checkpoint_every: 1000",
        "data: cifar10, loader, npz, synthetic",
        "optimizer: adam, momentum, sgd",
        "python run.py -m",
    ):
        assert needle in result.stdout


@pytest.mark.slow
def test_offline_without_data_is_one_line_naming_where_to_put_it(tmp_path):
    env_root = tmp_path / "cache"
    result = run_cli(
        "data.url=http://127.0.0.1:9/cifar-10-python.tar.gz",
        f"data.root={env_root}",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: could not download CIFAR-10") and line.endswith(
        "or point data.root at either"
    )
    assert f"{env_root}/cifar-10-batches-py" in line


def test_a_job_folder_is_refused_for_other_overrides_but_not_for_a_record_cut_off_empty(tmp_path):
    (tmp_path / config.MULTIRUN_RECORD).write_text(
        "hydra: {sweeper: {params: null}, overrides: {task: ['lr=0.001,0.002']}}\n"
    )
    record = tmp_path / "lr=0.001" / ".hydra" / "overrides.yaml"
    record.parent.mkdir(parents=True)
    record.write_text("- lr=0.001\n- max_steps=100\n")
    with pytest.raises(ConfigError, match="max_steps=100; now max_steps=200"):
        config.job_name(["lr=0.001", "max_steps=200"], str(tmp_path))
    record.write_text("")  # a kill while Hydra wrote it: the rerun resumes the job in its folder
    assert config.job_name(["lr=0.001", "max_steps=200"], str(tmp_path)) == "lr=0.001"

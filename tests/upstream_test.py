"""The upstream details sweeper relies on (sweeper/sweep/upstream.py), checked against the installed versions.

Each test names the adapter it guards, so that an upgrade of Hydra, hydra-submitit-launcher, submitit
or tensorboardX that changes one fails here, saying which, instead of in a sweep. The public routes
that replaced private calls (counting a basic sweep's jobs, writing HParams summaries) are checked
against the upstream behaviour they stand for.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import HydraContext
from omegaconf import OmegaConf
from slurm.fake import fake_slurm, launch

from sweeper.callbacks import count_jobs
from sweeper.config import sweep_overrides
from sweeper.sweep import upstream

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def test_submitit_launch_submits_with_replaces_only_the_submission_and_wait_of_upstreams_launch(tmp_path):
    env = fake_slurm(tmp_path, sbatch_ok=True)
    answer = launch("upstream-waited", tmp_path / "sweep", env)
    where = "sweeper.sweep.upstream.submitit_launch_submits_with no longer takes over upstream's submission"
    assert answer["error"] is None, f"{where}: {answer['error']}"
    assert answer["waited"] == ["42_0", "42_1"], f"{where}: its wait was given {answer['waited']}"
    returned = [(r["overrides"], r["value"]) for r in answer["returns"]]
    assert returned == [(["hidden=16"], "42_0"), (["hidden=32"], "42_1")], f"{where}: {returned}"
    assert answer["auto_executor_restored"], "submitit.AutoExecutor was not restored after the launch"
    # The fused SLURM launcher's jobs unpack each job's arguments as (overrides, job_dir_key, idx, ...).
    assert answer["job_args"] == [
        [5, ["hidden=16"], "hydra.sweep.dir", 0],
        [5, ["hidden=32"], "hydra.sweep.dir", 1],
    ], f"{where}: upstream's job arguments are now {answer['job_args']}"


class Recorder(Callback):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def on_multirun_end(self, config, **kwargs) -> None:
        self.calls.append(self.name)


def test_multirun_callbacks_is_the_list_hydra_notifies_last_first_at_the_end():
    try:
        from hydra._internal.callbacks import Callbacks
    except ImportError as error:
        pytest.fail(f"Hydra moved its Callbacks ({error}): check sweeper.sweep.upstream.multirun_callbacks")
    calls: list[str] = []
    config = OmegaConf.create({"hydra": {"callbacks": {}}})
    context = HydraContext(config_loader=None, callbacks=Callbacks(config))
    callbacks = upstream.multirun_callbacks(context)
    callbacks.append(Recorder("from the config", calls))
    callbacks.insert(0, Recorder("added by the launcher", calls))  # as the SLURM launcher adds its report
    context.callbacks.on_multirun_end(config=config)
    assert calls == ["from the config", "added by the launcher"], (
        "Hydra no longer notifies HydraContext.callbacks.callbacks in reverse at the multirun's end: "
        f"check sweeper.sweep.upstream.multirun_callbacks ({calls})"
    )
    with pytest.raises(upstream.UpstreamChanged, match="multirun_callbacks needs updating"):
        upstream.multirun_callbacks(HydraContext(config_loader=None, callbacks=object()))


def test_failed_job_error_is_the_error_hydras_run_job_keeps(tmp_path):
    # run_job configures logging and Hydra's singletons: in a process of its own.
    script = textwrap.dedent(
        f"""
        from hydra import compose, initialize
        from hydra._internal.callbacks import Callbacks
        from hydra.core.utils import JobStatus, run_job
        from hydra.types import HydraContext
        from sweeper.sweep.upstream import failed_job_error

        def task(cfg):
            raise KeyError("from the task")

        with initialize(version_base="1.3", config_path=None):
            cfg = compose(overrides=["hydra.run.dir={tmp_path}"], return_hydra_config=True)
        ret = run_job(task_function=task, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                      hydra_context=HydraContext(config_loader=None, callbacks=Callbacks()))
        assert ret.status == JobStatus.FAILED, ret.status
        print(repr(failed_job_error(ret)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "KeyError('from the task')", (
        f"check sweeper.sweep.upstream.failed_job_error: {result.stdout}"
    )
    nothing = JobReturn(status=JobStatus.FAILED, _return_value=None)
    assert isinstance(upstream.failed_job_error(nothing), upstream.UpstreamChanged)


@pytest.mark.parametrize(
    "params, task",
    [
        ({}, []),
        ({}, ["lr=0.1"]),
        ({}, ["hidden=16,32", "lr=0.1,0.01,0.001"]),
        ({"hidden": "16,32"}, ["lr=range(1,4)", "seed=choice(0,1)"]),
        ({"hidden": "16,32"}, ["hidden=8,16,32", "optimizer=adam"]),  # the command line wins
        ({}, ["hidden=16,32", "lr=interval(0.1,1)"]),
    ],
)
def test_count_jobs_counts_what_hydras_basic_sweeper_launches(params, task):
    config = OmegaConf.create(
        {"hydra": {"sweeper": {"_target_": BASIC_SWEEPER, "params": params}, "overrides": {"task": task}}}
    )
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    except ImportError as error:
        pytest.fail(f"Hydra moved its BasicSweeper ({error}): check that sweeper.callbacks.count_jobs agrees")
    try:
        batches = BasicSweeper.split_arguments(sweep_overrides(config.hydra), None)
        launched = sum(len(batch) for batch in batches)
    except Exception:  # the basic sweeper refuses the sweep (an interval): no total
        launched = None
    assert count_jobs(config) == launched


def test_the_hparams_summaries_go_through_tensorboardxs_public_file_writer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sweeper.record.writer import SESSION_SUFFIX, RunWriter, write_sweep_run
    from sweeper.status import Status

    run = RunWriter(tmp_path / "run")
    run.session({"hidden": 16}, Status.PRUNED)
    run.close()
    (session,) = (tmp_path / "run").glob(f"events.out.tfevents.*{SESSION_SUFFIX}")
    events = EventAccumulator(str(session))
    events.Reload()
    tags = set(events.PluginTagToContent("hparams"))
    assert tags == {"_hparams_/session_start_info", "_hparams_/session_end_info"}, tags

    higher = lambda a, b: a > b  # noqa: E731
    write_sweep_run(tmp_path / "sweep", {"hidden": [16, 32]}, ("accuracy/val",), [0.5, 0.4, 0.7], higher)
    events = EventAccumulator(str(tmp_path / "sweep"))
    events.Reload()
    assert set(events.PluginTagToContent("hparams")) == {"_hparams_/experiment"}
    assert [s.value for s in events.Scalars("sweep/best_objective")] == pytest.approx([0.5, 0.5, 0.7])
    assert [s.step for s in events.Scalars("sweep/objective")] == [1, 2, 3]
    # Minimised, a job without a finite objective (a diverged run's inf) adds no point.
    losses = [0.5, float("inf"), 0.4, 0.7]
    write_sweep_run(tmp_path / "losses", {"hidden": [16, 32]}, ("loss/val",), losses, lambda a, b: a < b)
    events = EventAccumulator(str(tmp_path / "losses"))
    events.Reload()
    assert [s.value for s in events.Scalars("sweep/best_objective")] == pytest.approx([0.5, 0.4, 0.4])
    assert [s.step for s in events.Scalars("sweep/objective")] == [1, 3, 4]

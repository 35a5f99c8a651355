"""What a run leaves for people and tools: TensorBoard events (tensorboardX) and metrics.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.struct_pb2 import ListValue

from sweeper.files import atomic_write

# tensorboardX imports torch, when it is installed, only to accept torch tensors, which sweeper never
# passes; that import alone cost 2 s of every run's start-up. Hide torch while tensorboardX loads.
_torch_was_loaded = "torch" in sys.modules
if not _torch_was_loaded:
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
try:
    from tensorboardX import SummaryWriter
    from tensorboardX.proto.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        Interval,
        MetricInfo,
        MetricName,
        Status,
    )
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.summary import hparams as hparams_summaries
finally:
    if not _torch_was_loaded:
        del sys.modules["torch"]

METRICS_FILE = "metrics.json"
# A run's status (metrics.json) as an HParams session status. TensorBoard has no "stopped early": a run
# pruned by successive halving is neither a success nor a failure, so it is shown as unknown.
SESSION_STATUS = {"ok": "STATUS_SUCCESS", "pruned": "STATUS_UNKNOWN"}


class RunWriter:
    """TensorBoard writer for one run's `tb/` folder: scalars, histograms and its HParams session."""

    def __init__(self, logdir: Path, purge_step: int | None = None):
        # purge_step: on resume, TensorBoard drops the events an interrupted attempt wrote past it.
        self._writer = SummaryWriter(str(logdir), purge_step=purge_step or None, flush_secs=10)

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, value, step)

    def histograms(self, step: int, values: dict[str, Any]) -> None:
        for tag, value in values.items():
            array = np.asarray(value, dtype=np.float32)
            if not np.isfinite(array).all():
                continue
            # TensorBoard's exponential buckets end near 1e20: a run blowing up (finite, not yet NaN)
            # would leave them all empty, and tensorboardX then raises; 64 even bins still work.
            bins = "tensorflow" if np.abs(array).max(initial=0.0) < 1e12 else 64
            self._writer.add_histogram(tag, array, step, bins=bins)

    def hparams(self, hparams: dict[str, Any], status: str) -> None:
        """Record this run as an HParams session in its own folder.

        The metric values come from the scalars already written here. tensorboardX's `add_hparams`
        would put the session into a timestamped subfolder and mark every run a success, so the
        session start/end summaries are written directly instead. No per-run experiment summary is
        written: TensorBoard would take the first one it found as the whole sweep's experiment.
        """
        _, session_start, _ = hparams_summaries(hparams, {})
        session_status = Status.Value(SESSION_STATUS.get(status, "STATUS_FAILURE"))
        session_end = _hparams_summary(
            "session_end_info", session_end_info=SessionEndInfo(status=session_status)
        )
        file_writer = self._writer._get_file_writer()
        file_writer.add_summary(session_start)
        file_writer.add_summary(session_end)

    def close(self) -> None:
        self._writer.close()


def write_metrics(workdir: Path, metrics: dict[str, Any]) -> Path:
    """Write `metrics.json` atomically (the sweep summary reads it)."""
    path = Path(workdir) / METRICS_FILE
    atomic_write(path, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    return path


def record_crash(workdir: Path, hparams: dict[str, Any], error: str, wall_time_s: float) -> None:
    """Leave a crashed sweep job's trace: metrics.json with its error, and a failed HParams session."""
    writer = RunWriter(Path(workdir) / "tb")
    try:
        writer.hparams(hparams, status="crashed")
    finally:
        writer.close()
    write_metrics(
        workdir,
        {
            "status": "crashed",
            "error": error,
            "steps": None,
            "loss": None,
            "train_accuracy": None,
            "val_accuracy": None,
            "test_accuracy": None,
            "wall_time_s": round(wall_time_s, 3),
            "objective": 0.0,
        },
    )


def _hparams_summary(tag: str, **content: Any) -> Summary:
    """A Summary carrying HParams plugin data (an experiment or a session end) under `_hparams_/<tag>`."""
    data = HParamsPluginData(version=0, **content).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=data))
    return Summary(value=[Summary.Value(tag=f"_hparams_/{tag}", metadata=metadata)])


def write_experiment(logdir: Path, domains: dict[str, list | tuple], metrics: tuple[str, ...]) -> None:
    """Declare a sweep's hyperparameters and metrics for TensorBoard's HParams dashboard, in `logdir`.

    `domains` maps each swept key to its listed values or to a (low, high) interval. Earlier event files
    directly in `logdir` are replaced, so that a regenerated summary leaves exactly one experiment.
    """
    infos = []
    for key, domain in domains.items():
        if isinstance(domain, tuple):
            interval = Interval(min_value=domain[0], max_value=domain[1])
            infos.append(
                HParamInfo(name=key, type=DataType.Value("DATA_TYPE_FLOAT64"), domain_interval=interval)
            )
            continue
        values = ListValue()
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in domain)
        for value in domain:
            if numeric:
                values.values.add().number_value = float(value)
            else:
                values.values.add().string_value = str(value)
        kind = DataType.Value("DATA_TYPE_FLOAT64" if numeric else "DATA_TYPE_STRING")
        infos.append(HParamInfo(name=key, type=kind, domain_discrete=values))
    metric_infos = [MetricInfo(name=MetricName(tag=m)) for m in metrics]
    logdir = Path(logdir)
    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    with SummaryWriter(str(logdir)) as writer:
        summary = _hparams_summary(
            "experiment", experiment=Experiment(hparam_infos=infos, metric_infos=metric_infos)
        )
        writer._get_file_writer().add_summary(summary)

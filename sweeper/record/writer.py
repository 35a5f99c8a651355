"""What a run leaves for people and tools: TensorBoard events (tensorboardX) and metrics.json."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.struct_pb2 import ListValue

from sweeper.files import atomic_write
from sweeper.status import Status

# tensorboardX imports torch, when it is installed, only to accept torch tensors, which sweeper never
# passes; that import alone cost 2 s of every run's start-up. Hide torch while tensorboardX loads.
_torch_was_loaded = "torch" in sys.modules
if not _torch_was_loaded:
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
try:
    from tensorboardX import FileWriter, SummaryWriter
    from tensorboardX.proto.api_pb2 import (
        DataType,
        Experiment,
        HParamInfo,
        Interval,
        MetricInfo,
        MetricName,
    )
    from tensorboardX.proto.api_pb2 import Status as SessionStatus

    # The graph protos are sweeper.record.graph's, imported here so that torch stays hidden for them too.
    from tensorboardX.proto.attr_value_pb2 import AttrValue  # noqa: F401
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef  # noqa: F401
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto  # noqa: F401
    from tensorboardX.summary import hparams as hparams_summaries
    from tensorboardX.summary import scalar
finally:
    if not _torch_was_loaded:
        del sys.modules["torch"]

METRICS_FILE = "metrics.json"
# A run's status as an HParams session status. TensorBoard has no "stopped early": a pruned or
# interrupted run is neither a success nor a failure, so it is unknown; diverged and crashed runs fail.
SESSION_STATUS = {
    Status.OK: "STATUS_SUCCESS",
    Status.PRUNED: "STATUS_UNKNOWN",
    Status.INTERRUPTED: "STATUS_UNKNOWN",
}
# The HParams metrics: TensorBoard shows each tag's last value, so a run's final values (metrics.json
# key on the right) are written last, at the step it ended.
# `loss/train` is the article's: the training batch's loss with the L2 term; `loss/val`, `loss/test` and
# `loss/train_set` are mean cross-entropies over a whole split, without it.
METRIC_TAGS = {
    "accuracy/val": "val_accuracy",
    "accuracy/test": "test_accuracy",
    "accuracy/train": "train_accuracy",
    "loss/train": "loss",
    "loss/val": "val_loss",
    "loss/test": "test_loss",
    "loss/train_set": "train_loss",
}
# The values written for metrics a run has none of (it diverged or crashed): without them TensorBoard's
# parallel coordinates and scatter plots would leave the run out. Accuracy 0 is what sweeper scores a
# failed run under the default objective; a loss of -1 cannot be real. Both sit at the edge of every
# chart (the sweep summary, not these charts, ranks runs: sweeper.objective).
MISSING_ACCURACY = 0.0
MISSING_LOSS = -1.0
SESSION_SUFFIX = ".session"  # the event file holding a run's HParams session, replaced when it ends again
GRAPH_SUFFIX = (
    ".graph"  # the event file holding a run's graph (sweeper.record.graph), replaced when it starts again
)


class RunWriter:
    """TensorBoard writer for one run's folder (its events beside its checkpoints, so that TensorBoard names
    the run by its folder, the job): scalars, histograms, final values, HParams session."""

    def __init__(self, logdir: Path, purge_step: int | None = None):
        # purge_step: on resume, TensorBoard drops the events an interrupted attempt wrote past it.
        self.logdir = Path(logdir)
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
            # `tensors/`: Time Series sorts groups by name, and this puts histograms after the scalars.
            self._writer.add_histogram(f"tensors/{tag}", array, step, bins=bins)

    def final(self, metrics: dict[str, Any]) -> None:
        """The run's final values (metrics.json) as the last point of each metric tag, MISSING_* where it
        has none: what the HParams table, parallel coordinates and scatter plots show for it."""
        step = metrics.get("steps") or 0
        values = {tag: metrics.get(key) for tag, key in METRIC_TAGS.items()}
        missing = {tag: MISSING_LOSS if tag.startswith("loss") else MISSING_ACCURACY for tag in values}
        self.scalars(step, {tag: missing[tag] if value is None else value for tag, value in values.items()})
        self._writer.flush()

    def graph(self, graph_def: GraphDef) -> None:
        """The run's graph for TensorBoard's Graphs tab, in an event file of its own, so that a resumed run
        replaces its first attempt's graph instead of adding a second one."""
        self.replace(GRAPH_SUFFIX, Event(graph_def=graph_def.SerializeToString()))

    def replace(self, suffix: str, *events: Event) -> None:
        """Write `events` to a new event file ending in `suffix`, in place of an earlier one."""
        for old in self.logdir.glob(f"events.out.tfevents.*{suffix}"):
            old.unlink()
        with contextlib.closing(FileWriter(str(self.logdir), filename_suffix=suffix)) as writer:
            for event in events:
                writer.add_event(event)

    def session(self, hparams: dict[str, Any], status: Status) -> None:
        """Record this run as an HParams session, its status among its hyperparameters (a column to
        sort and filter by), in an event file of its own that replaces an earlier attempt's.

        tensorboardX's `add_hparams` would put the session into a timestamped subfolder and mark every
        run a success, so the session start/end summaries are written directly. TensorBoard keeps the
        first session it reads in a folder, hence one file, replaced. No per-run experiment summary:
        TensorBoard would take the first one it found as the whole sweep's experiment.
        """
        _, session_start, _ = hparams_summaries({**hparams, "status": status.value}, {})
        session_status = SessionStatus.Value(SESSION_STATUS.get(status, "STATUS_FAILURE"))
        session_end = _hparams_summary(
            "session_end_info", session_end_info=SessionEndInfo(status=session_status)
        )
        self.replace(SESSION_SUFFIX, Event(summary=session_start), Event(summary=session_end))

    def close(self) -> None:
        self._writer.close()


def write_metrics(workdir: Path, metrics: dict[str, Any]) -> Path:
    """Write `metrics.json` atomically (the sweep summary reads it)."""
    path = Path(workdir) / METRICS_FILE
    atomic_write(path, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_metrics(workdir: Path, warn: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """A run's metrics.json, or None when it has none or it cannot be read (cut short by a full disk,
    say: then `warn` is told, and the run counts as not finished)."""
    path = Path(workdir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
        Status(metrics["status"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        if warn is not None:
            warn(f"{path} is damaged ({type(error).__name__}: {error}): the job counts as not finished")
        return None
    return metrics


def finished_metrics(workdir: Path, warn: Callable[[str], None] | None = None) -> dict | None:
    """metrics.json of a job that already ended with a result (ok, diverged or pruned), else None."""
    metrics = read_metrics(workdir, warn=warn)
    return metrics if metrics is not None and Status(metrics["status"]).is_result else None


def record_crash(
    workdir: Path, hparams: dict[str, Any], error: str, wall_time_s: float, objective: float
) -> None:
    """Leave a crashed sweep job's trace: metrics.json with its error and `objective` (the worst value
    of the sweep's objective), and a failed HParams session."""
    metrics = {
        "status": Status.CRASHED.value,
        "error": error,
        "steps": None,
        "loss": None,
        "train_accuracy": None,
        "val_accuracy": None,
        "test_accuracy": None,
        "train_loss": None,
        "val_loss": None,
        "test_loss": None,
        "wall_time_s": round(wall_time_s, 3),
        "objective": objective,
    }
    writer = RunWriter(Path(workdir))
    try:
        writer.final(metrics)
        writer.session(hparams, Status.CRASHED)
    finally:
        writer.close()
    write_metrics(workdir, metrics)


def _hparams_summary(tag: str, **content: Any) -> Summary:
    """A Summary carrying HParams plugin data (an experiment or a session end) under `_hparams_/<tag>`."""
    data = HParamsPluginData(version=0, **content).SerializeToString()
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams", content=data))
    return Summary(value=[Summary.Value(tag=f"_hparams_/{tag}", metadata=metadata)])


def write_sweep_run(
    folder: Path,
    domains: dict[str, list | tuple],
    metrics: tuple[str, ...],
    objectives: list[float | None],
    better: Callable[[float, float], bool],
) -> None:
    """A sweep's own TensorBoard run in `folder`: the HParams experiment, which declares each swept
    key's domain (its listed values, or a (low, high) interval) and the metrics, so that the HParams
    dashboard shows those columns; and `sweep/objective` and `sweep/best_objective` (by `better(a, b)`:
    whether a beats b) of the k-th job to finish at step k, so that the run has data of its own (a job
    without a finite objective adds no point). Earlier event files in `folder` are replaced.
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
    folder = Path(folder)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    with contextlib.closing(FileWriter(str(folder))) as writer:
        summary = _hparams_summary(
            "experiment", experiment=Experiment(hparam_infos=infos, metric_infos=metric_infos)
        )
        writer.add_summary(summary)
        best = None
        for k, objective in enumerate(objectives, 1):
            if objective is None or not np.isfinite(objective):
                continue
            best = objective if best is None or better(objective, best) else best
            writer.add_summary(scalar("sweep/objective", objective), k)
            writer.add_summary(scalar("sweep/best_objective", best), k)

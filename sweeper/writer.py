"""What a run leaves for people and tools: TensorBoard events (tensorboardX) and metrics.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.proto.api_pb2 import Status
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboardX.summary import hparams as hparams_summaries

from sweeper.files import atomic_write

METRICS_FILE = "metrics.json"


class RunWriter:
    """TensorBoard writer for one run's `tb/` folder: scalars, histograms and its HParams session."""

    def __init__(self, logdir: Path, purge_step: int | None = None):
        # purge_step: on resume, TensorBoard drops the events an interrupted attempt wrote past it.
        self._writer = SummaryWriter(str(logdir), purge_step=purge_step or None, flush_secs=10)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, value, step)

    def histograms(self, step: int, values: dict[str, Any]) -> None:
        for tag, value in values.items():
            array = np.asarray(value, dtype=np.float32)
            if np.isfinite(array).all():
                self._writer.add_histogram(tag, array, step)

    def hparams(self, hparams: dict[str, Any], success: bool) -> None:
        """Record this run as an HParams session in its own folder.

        The metric values come from the scalars already written here. tensorboardX's `add_hparams`
        would put the session into a timestamped subfolder and mark every run a success, so the
        session start/end summaries are written directly instead. No per-run experiment summary is
        written: TensorBoard would take the first one it found as the whole sweep's experiment.
        """
        _, session_start, _ = hparams_summaries(hparams, {})
        end = HParamsPluginData(
            version=0,
            session_end_info=SessionEndInfo(
                status=Status.Value("STATUS_SUCCESS" if success else "STATUS_FAILURE")
            ),
        )
        session_end = Summary(
            value=[
                Summary.Value(
                    tag="_hparams_/session_end_info",
                    metadata=SummaryMetadata(
                        plugin_data=SummaryMetadata.PluginData(
                            plugin_name="hparams", content=end.SerializeToString()
                        )
                    ),
                )
            ]
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

"""Shared helpers: the real configs composed with Hydra, tiny CIFAR-10 archives in the official format."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from sweeper import config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A small synthetic run: seconds on two cores, still well above chance.
FAST = [
    "data=synthetic",
    "data.train_size=1200",
    "data.val_size=200",
    "data.test_size=400",
    "batch_size=100",
    "hidden=32",
    "max_steps=200",
    "log_every=50",
    "checkpoint_every=100",
]


@pytest.fixture(scope="session", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """One JAX compilation cache for the whole session, this process and every `run.py` it starts: the
    tests train the same few shapes over and over, and each compiles once (never into the user's cache)."""
    from sweeper.train.run import enable_compilation_cache

    cache = tmp_path_factory.mktemp("jax-cache")
    os.environ["SWEEPER_JAX_CACHE"] = str(cache)
    enable_compilation_cache(cache)
    return cache


def mlp_spec(hidden: int, input_shape: tuple[int, ...] = (3072,), num_classes: int = 10):
    """The article's MLP of width `hidden` as sweeper.task.models builds it (float inputs)."""
    from sweeper.task import models

    return models.Spec("sweeper.task.model.MLP", (("hidden", hidden),), input_shape, "float32", num_classes)


def results(metrics: dict) -> dict:
    """A run's metrics without its timings (and the attempts' wall times), which vary from run to run."""
    return {k: v for k, v in metrics.items() if k not in ("wall_time_s", "timings", "attempts")}


def compose_config(*overrides: str, return_hydra: bool = False):
    """The real `conf/config.yaml` with overrides, as `python run.py ...` would see it."""
    config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra)


def run_cli(
    *args: str, cwd: Path = ROOT, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess, output captured; `env` adds to this process' environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )


def kill_when(args: list[str], ready, timeout: float = 180) -> None:
    """Start `python run.py ARGS` and SIGKILL it as soon as `ready()` is true (it must not end first)."""
    command = [sys.executable, str(ROOT / "run.py"), *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the run ended before it could be killed"
        )
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def job_metrics(sweep_dir: Path) -> dict[str, dict]:
    """Each finished job's metrics.json in `sweep_dir`, by job folder name."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard_server(logdir: Path, runs: int):
    """A real TensorBoard on 127.0.0.1 over `logdir`, once it lists `runs` runs: yields (get, run names),
    `get(path, body=None)` answering its /data API (POST with a JSON body)."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--load_fast=false", "--reload_interval", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/data{path}", data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline, names = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                names = get("/runs")
                if len(names) >= runs:
                    break
            time.sleep(0.5)
        yield get, names
    finally:
        server.terminate()
        server.wait(timeout=30)


def killed_and_rerun(args: list[str], tmp_path: Path, ready: str, count: int) -> tuple[Path, Path, set, str]:
    """Run the sweep `args` whole into tmp_path/whole; run it into tmp_path/killed and SIGKILL it once
    `count` files match the glob `ready` there; rerun it into that folder. Returns both folders, the jobs
    that had finished when it was killed, and the rerun's output."""
    whole = run_cli(*args, f"hydra.sweep.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    kill_when([*args, f"hydra.sweep.dir={killed}"], lambda: len(list(killed.glob(ready))) >= count)
    before = {p.parent.name for p in killed.glob("*/metrics.json")}
    rerun = run_cli(*args, f"hydra.sweep.dir={killed}")
    assert rerun.returncode == 0, rerun.stderr
    return tmp_path / "whole", killed, before, rerun.stdout


class _Py2StrPickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 `str`, as the official cPickle files are."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        n = len(obj)
        self.write(
            pickle.SHORT_BINSTRING + bytes([n]) + obj
            if n < 256
            else pickle.BINSTRING + struct.pack("<i", n) + obj
        )
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def official_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2StrPickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def tiny_batches(per_batch: int = 20, seed: int = 0) -> dict[str, dict]:
    """The six official batch dicts with `per_batch` random images each."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        for name in names
    }


def write_folder(dest: Path, batches: dict[str, dict]) -> Path:
    folder = dest / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(official_pickle(batch))
    (folder / "batches.meta").write_bytes(official_pickle({b"label_names": [b"c%d" % i for i in range(10)]}))
    return folder


def write_tarball(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> str:
    """A .tar.gz with `files` (member name -> bytes) and symlinks; returns its md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return hashlib.md5(path.read_bytes()).hexdigest()


def official_tarball(path: Path, batches: dict[str, dict]) -> str:
    files = {f"cifar-10-batches-py/{name}": official_pickle(batch) for name, batch in batches.items()}
    files["cifar-10-batches-py/batches.meta"] = official_pickle({b"label_names": []})
    return write_tarball(path, files)


@pytest.fixture
def batches():
    return tiny_batches()

"""CIFAR-10, the official "python version": download (md5-checked), verify, extract, parse. numpy only.

Images stay uint8 (N, 3072) in R-plane, G-plane, B-plane order as the official files store them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from tqdm import tqdm

from sweeper import safe_pickle
from sweeper.config import CIFAR10_MD5
from sweeper.task.errors import DataError

NUM_CLASSES = 10  # CIFAR-10's (and the synthetic data's)
IMAGE_SIZE = 3072  # 32 x 32 x 3

FOLDER = "cifar-10-batches-py"
TARBALL = "cifar-10-python.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


def load(data_cfg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Official-order (train_x, train_y, test_x, test_y), fetching the archive if it is not there."""
    folder = find_or_fetch(Path(os.path.expanduser(str(data_cfg.root))), data_cfg.url, data_cfg.md5)
    parts = [read_batch(folder / name) for name in TRAIN_FILES]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = read_batch(folder / TEST_FILE)
    return train_x, train_y, test_x, test_y


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def find_or_fetch(root: Path, url: str, md5: str | None) -> Path:
    """The `cifar-10-batches-py` folder for `root`; downloads and extracts only if nothing is there.

    `root` may be the batches folder itself, a tarball, or a cache folder holding either.
    """
    if root.is_dir() and _complete(root):
        return root
    if root.is_file():
        tarball, dest = root, root.parent
    else:
        tarball, dest = root / TARBALL, root
    if _complete(dest / FOLDER):
        return dest / FOLDER
    if not tarball.is_file():
        if root.suffix == ".gz":
            raise DataError(f"data.root {root} does not exist")
        download(url, tarball, md5, root)
    else:
        check_md5(tarball, md5)
    extract(tarball, dest)
    if not _complete(dest / FOLDER):
        raise DataError(f"{tarball} holds no complete {FOLDER}/ folder")
    return dest / FOLDER


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(tarball: Path, md5: str | None) -> None:
    """Refuse a tarball whose md5 differs from `md5` (no check when `md5` is empty)."""
    if md5 and (actual := file_md5(tarball)) != md5:
        raise DataError(
            f"{tarball} has md5 {actual}, expected {md5}; replace the file, or set "
            f"data.md5={actual} if you built it yourself"
        )


def download(url: str, dest: Path, md5: str | None, root: Path) -> None:
    """Fetch `url` into `dest` via a temporary file that is renamed only once its md5 matches."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write into data.root {root}: {e.strerror}") from e
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    size = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(
                        total=size, unit="B", unit_scale=True, desc=f"Downloading {dest.name}", disable=None
                    ) as bar:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DataError(
                    f"could not download CIFAR-10 from {url} ({reason}). Offline? Put {TARBALL} "
                    f"(md5 {CIFAR10_MD5}) in {root}/ or its extracted {FOLDER}/ folder at "
                    f"{root / FOLDER}, or point data.root at either"
                ) from e
            out.flush()
            os.fsync(out.fileno())
        if md5 and (actual := digest.hexdigest()) != md5:
            raise DataError(f"download from {url} has md5 {actual}, expected {md5}; the file was removed")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _check_member(member: tarfile.TarInfo, dest: Path, tarball: Path) -> None:
    name = member.name
    if member.issym() or member.islnk():
        raise DataError(f"{tarball}: refusing link member {name!r} -> {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{tarball}: refusing special member {name!r}")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts or not (dest / name).resolve().is_relative_to(dest):
        raise DataError(f"{tarball}: refusing member {name!r}, which would land outside {dest}")


def extract(tarball: Path, dest: Path) -> None:
    """Extract `tarball` into `dest` atomically; refuse members that would escape `dest`."""
    dest = dest.resolve()
    try:
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract-"))
    except OSError as e:
        raise DataError(f"cannot extract {tarball} into {dest}: {e.strerror}") from e
    try:
        try:
            with tarfile.open(tarball, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member, dest, tarball)
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"{tarball} is truncated or not a tar.gz archive ({e})") from e
        if (tmp / FOLDER).is_dir():
            target = dest / FOLDER
            if target.exists():  # an incomplete earlier copy: replace it whole
                shutil.rmtree(target)
            os.replace(tmp / FOLDER, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 3072), int32 labels (N,)) from one official pickle, via the restricted unpickler."""
    try:
        with open(path, "rb") as f:
            batch = safe_pickle.load(f, encoding="bytes")
    except safe_pickle.ForbiddenGlobal as e:
        raise DataError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, OSError) as e:
        raise DataError(f"{path} is truncated or not a CIFAR-10 batch ({e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    images = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != IMAGE_SIZE
        or labels is None
        or len(labels) != len(images)
    ):
        raise DataError(
            f"{path} is not a CIFAR-10 batch (expected uint8 data of shape (N, {IMAGE_SIZE}) and N labels)"
        )
    labels = np.asarray(labels, dtype=np.int32)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels outside 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(images), labels

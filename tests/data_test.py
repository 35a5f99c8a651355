"""The CIFAR-10 loader on tiny archives in the official format, and the synthetic data. No network."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import official_pickle, official_tarball, write_folder, write_tarball

from sweeper.task import data
from sweeper.task.data import DataError

UNREACHABLE = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # discard port: refused at once


def cifar_cfg(root, url=UNREACHABLE, md5=None, val_size=0):
    return SimpleNamespace(name="cifar10", root=str(root), url=url, md5=md5, val_size=val_size)


def expected_arrays(batches):
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return (
        np.concatenate([b[b"data"] for b in train]),
        np.concatenate([b[b"labels"] for b in train]),
        batches["test_batch"][b"data"],
        np.asarray(batches["test_batch"][b"labels"]),
    )


def assert_loaded(dataset, batches, val_size=0):
    train_x, train_y, test_x, test_y = expected_arrays(batches)
    n = len(train_x) - val_size
    assert dataset.train_images.dtype == np.uint8 and dataset.train_images.shape == (n, 3072)
    np.testing.assert_array_equal(dataset.train_images, train_x[:n])
    np.testing.assert_array_equal(dataset.train_labels, train_y[:n])
    np.testing.assert_array_equal(dataset.val_images, train_x[n:])  # held out from the end
    np.testing.assert_array_equal(dataset.val_labels, train_y[n:])
    np.testing.assert_array_equal(dataset.test_images, test_x)
    np.testing.assert_array_equal(dataset.test_labels, test_y)
    assert dataset.mean_image.dtype == np.float32
    np.testing.assert_allclose(dataset.mean_image, train_x[:n].astype(np.float64).mean(0), rtol=1e-6)


def test_download_verifies_extracts_and_loads(tmp_path, batches):
    tarball = tmp_path / "server" / "cifar-10-python.tar.gz"
    md5 = official_tarball(tarball, batches)
    cache = tmp_path / "cache"
    dataset = data.load(cifar_cfg(cache, url=tarball.as_uri(), md5=md5, val_size=10))
    assert_loaded(dataset, batches, val_size=10)
    assert (cache / "cifar-10-python.tar.gz").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    # Cached now: the second load must not touch the network (the URL is unreachable).
    assert_loaded(data.load(cifar_cfg(cache, md5=md5)), batches)


def test_md5_mismatch_removes_the_download(tmp_path, batches):
    tarball = tmp_path / "server" / "cifar-10-python.tar.gz"
    official_tarball(tarball, batches)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="md5 .* expected 0{32}; the file was removed"):
        data.load(cifar_cfg(cache, url=tarball.as_uri(), md5="0" * 32))
    assert list(cache.iterdir()) == []  # no tarball, no .part file


def test_root_may_be_the_folder_or_the_tarball(tmp_path, batches):
    folder = write_folder(tmp_path / "given", batches)
    assert_loaded(data.load(cifar_cfg(folder)), batches)
    assert_loaded(data.load(cifar_cfg(folder.parent)), batches)
    tarball = tmp_path / "tb" / "cifar-10-python.tar.gz"
    md5 = official_tarball(tarball, batches)
    assert_loaded(data.load(cifar_cfg(tarball, md5=md5)), batches)
    with pytest.raises(DataError, match="expected 0{32}"):
        data.load(cifar_cfg(tmp_path / "tb2" / "x", md5="0" * 32, url=tarball.as_uri()))


def test_a_local_tarball_with_the_wrong_md5_is_refused_and_kept(tmp_path, batches):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    official_tarball(tarball, batches)
    with pytest.raises(DataError, match=r"has md5 \w+, expected 1{32}; .*data.md5="):
        data.load(cifar_cfg(tmp_path, md5="1" * 32))
    assert tarball.is_file() and not (tmp_path / "cifar-10-batches-py").exists()


def test_offline_with_nothing_cached_says_where_to_put_the_data(tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        data.load(cifar_cfg(root))
    message = str(error.value)
    assert "could not download" in message and "Offline?" in message
    assert f"{root}/" in message and "cifar-10-python.tar.gz" in message
    assert str(root / "cifar-10-batches-py") in message
    assert not [p for p in root.iterdir()]  # no partial file left


def test_truncated_tarball_is_refused(tmp_path, batches):
    tarball = tmp_path / "cifar-10-python.tar.gz"
    official_tarball(tarball, batches)
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or not a tar.gz"):
        data.load(cifar_cfg(tmp_path))
    assert not (tmp_path / "cifar-10-batches-py").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract")]


def test_truncated_pickle_is_refused(tmp_path, batches):
    folder = write_folder(tmp_path, batches)
    full = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="data_batch_3 is truncated or not a CIFAR-10 batch"):
        data.load(cifar_cfg(folder))


@pytest.mark.parametrize(
    "member", ["../escaped", "/tmp/sweeper-absolute-escape", "cifar-10-batches-py/../../escaped"]
)
def test_members_escaping_the_folder_are_refused(tmp_path, member):
    root = tmp_path / "root"
    write_tarball(root / "cifar-10-python.tar.gz", {member: b"x", "cifar-10-batches-py/data_batch_1": b"y"})
    with pytest.raises(DataError, match="would land outside"):
        data.load(cifar_cfg(root))
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/sweeper-absolute-escape").exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_link_members_are_refused(tmp_path):
    root = tmp_path / "root"
    write_tarball(
        root / "cifar-10-python.tar.gz", {}, links={"cifar-10-batches-py/data_batch_1": "/etc/passwd"}
    )
    with pytest.raises(DataError, match="refusing link member"):
        data.load(cifar_cfg(root))


class _RunsCode:
    """Unpickling this calls os.system: what a malicious 'batch' would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_runs_code_is_refused(tmp_path, batches):
    folder = write_folder(tmp_path, batches)
    marker = tmp_path / "pwned"
    evil = {b"data": _RunsCode(marker), b"labels": []}
    (folder / "data_batch_2").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(DataError, match=r"data_batch_2: refused to load global '(posix|os)\.system'"):
        data.load(cifar_cfg(folder))
    assert not marker.exists()


def test_a_batch_of_the_wrong_shape_is_refused(tmp_path, batches):
    folder = write_folder(tmp_path, batches)
    (folder / "test_batch").write_bytes(
        official_pickle({b"data": np.zeros((3, 5), np.uint8), b"labels": [0] * 3})
    )
    with pytest.raises(DataError, match="test_batch is not a CIFAR-10 batch"):
        data.load(cifar_cfg(folder))


def test_val_size_must_leave_training_images(tmp_path, batches):
    folder = write_folder(tmp_path, batches)
    with pytest.raises(DataError, match="val_size=100 leaves no training examples"):
        data.load(cifar_cfg(folder, val_size=100))


def test_synthetic_data_is_cifar_shaped_seeded_and_learnable():
    cfg = SimpleNamespace(name="synthetic", train_size=1200, test_size=500, val_size=200, noise=64.0, seed=3)
    a, b = data.load(cfg), data.load(cfg)
    assert a.train_images.shape == (1000, 3072) and a.train_images.dtype == np.uint8
    assert a.val_images.shape == (200, 3072) and a.test_images.shape == (500, 3072)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    # The classes are separable: a nearest-class-mean classifier is far above chance (0.1).
    means = np.stack([a.train_images[a.train_labels == c].mean(0) for c in range(10)])
    distances = ((a.test_images[:, None, :].astype(np.float32) - means[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == a.test_labels).mean() > 0.5
    other = data.load(SimpleNamespace(**{**vars(cfg), "seed": 4}))
    assert not np.array_equal(other.train_images, a.train_images)

"""A user's own numpy dataset: .npz files and loader functions written into tmp_path, every refusal."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from sweeper.task import arrays
from sweeper.task.arrays import call_loader, check_arrays, load_npz
from sweeper.task.data import DataError

SOURCE = "data.path=/abs/file.npz"


def good(n_train=20, n_test=8, n_val=0, classes=3, shape=(4,), dtype=np.float32):
    """A small valid dataset: every class appears in training."""
    rng = np.random.default_rng(0)
    out = {
        "x_train": rng.random((n_train, *shape)).astype(dtype),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.random((n_test, *shape)).astype(dtype),
        "y_test": np.arange(n_test) % classes,
    }
    if n_val:
        out["x_val"] = rng.random((n_val, *shape)).astype(dtype)
        out["y_val"] = np.arange(n_val) % classes
    return out


def refused(data, *names, source=SOURCE):
    """check_arrays' DataError for `data`: one line, prefixed by the source, naming every one of `names`."""
    with pytest.raises(DataError) as info:
        check_arrays(data, source)
    return one_line(info.value, source, *names)


def one_line(error, prefix, *names):
    message = str(error)
    assert "\n" not in message and message.startswith(prefix + ":"), message
    for name in names:
        assert name in message, message
    return message


def npz_refused(path, *names):
    with pytest.raises(DataError) as info:
        load_npz(path)
    return one_line(info.value, f"data.path={path}", *names)


# --- check_arrays --------------------------------------------------------------------------------------


def test_good_arrays_give_the_number_of_classes():
    assert check_arrays(good(classes=3), SOURCE) == 3
    assert check_arrays(good(n_val=6, classes=2, shape=(2, 3), dtype=np.uint8), SOURCE) == 2
    data = good()
    data["x_train"] = data["x_train"] > 0.5  # bool features are numbers too
    data["x_test"] = data["x_test"] > 0.5
    data["y_train"] = data["y_train"].astype(np.uint8)
    assert check_arrays(data, SOURCE) == 3


def test_a_missing_required_array_is_named():
    data = good()
    del data["y_test"]
    assert "(given: x_train, y_train, x_test)" in refused(data, "missing y_test")


@pytest.mark.parametrize("given, absent", [("x_val", "y_val"), ("y_val", "x_val")])
def test_val_needs_both_arrays(given, absent):
    data = good(n_val=4)
    del data[absent]
    refused(data, given, absent)


@pytest.mark.parametrize(
    "value",
    [
        np.array([[1], [1, 2]], dtype=object),
        np.array([["a", "b"], ["c", "d"]]),
        np.array([[1 + 2j], [3j]]),
    ],
)
def test_features_must_be_numbers(value):
    data = good()
    data["x_test"] = value
    refused(data, "x_test", str(value.dtype))


def test_features_need_an_example_axis():
    data = good()
    data["x_train"] = np.asarray(1.0, np.float32)  # 0-d: no example axis
    refused(data, "x_train", "scalar")
    data["x_train"] = [[1.0]]
    refused(data, "x_train", "not a numpy array")


def test_features_share_the_training_example_shape():
    data = good(n_val=4)
    data["x_val"] = data["x_val"].reshape(4, 2, 2)
    refused(data, "x_val", "(2, 2)", "(4,)")


def test_nan_and_inf_are_counted():
    data = good()
    data["x_test"][0, 1] = np.nan
    data["x_test"][3, 0] = np.inf
    data["x_test"][5, 2] = -np.inf
    refused(data, "x_test", "3 NaN or inf")


def test_labels_must_be_integers_even_when_whole():
    data = good()
    data["y_train"] = data["y_train"].astype(np.float64)  # 0., 1., 2.: whole, still refused
    refused(data, "y_train", "integer class labels 0..C-1, got float64")
    data = good()
    data["y_test"] = data["y_test"].astype(bool)
    refused(data, "y_test", "got bool")


def test_labels_must_be_one_dimensional():
    data = good()
    data["y_train"] = data["y_train"].reshape(-1, 1)
    refused(data, "y_train", "(20, 1)")


def test_labels_match_their_examples_in_number():
    data = good()
    data["y_test"] = data["y_test"][:-1]
    refused(data, "x_test", "y_test", "8 examples", "7 labels")


def test_negative_labels_are_refused():
    data = good()
    data["y_train"][4] = -1
    refused(data, "y_train", "negative label -1")


def test_labels_beyond_training_are_refused():
    data = good(n_val=4, classes=10)
    data["y_test"][2] = 12
    assert "y_test holds label 12, but the training labels go to 9" in refused(data, "y_test")
    data = good(n_val=4, classes=10)
    data["y_val"][0] = 10
    refused(data, "y_val", "label 10")


def test_one_class_is_not_a_classifier():
    data = good(classes=1)
    refused(data, "y_train", "at least 2 classes")


@pytest.mark.parametrize("name", ["x_train", "x_test"])
def test_empty_splits_are_refused(name):
    data = good()
    label = "y" + name[1:]
    data[name], data[label] = data[name][:0], data[label][:0]
    refused(data, name, "0 examples")


def test_an_empty_validation_split_is_refused():
    data = good(n_val=4)
    data["x_val"], data["y_val"] = data["x_val"][:0], data["y_val"][:0]
    refused(data, "x_val", "0 examples", "drop x_val and y_val")


# --- load_npz -----------------------------------------------------------------------------------------


def test_a_good_file_loads_fully_and_ignores_extra_arrays(tmp_path):
    data = good(n_val=4)
    path = tmp_path / "mine.npz"
    np.savez(path, notes=np.arange(3), **data)
    loaded = load_npz(str(path))
    assert sorted(loaded) == sorted(data)
    for name, value in data.items():
        np.testing.assert_array_equal(loaded[name], value)
        assert type(loaded[name]) is np.ndarray  # in memory: usable after the file is gone
    path.unlink()
    assert check_arrays(loaded, f"data.path={path}") == 3


def test_a_compressed_file_loads(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez_compressed(path, **good())
    assert check_arrays(load_npz(path), f"data.path={path}") == 3


def test_a_missing_file(tmp_path):
    npz_refused(tmp_path / "absent.npz", "no such file")


def test_a_directory(tmp_path):
    npz_refused(tmp_path, "directory")


def test_an_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.npz"
    np.savez(path, **good())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # chmod cannot lock out root, who runs the tests in containers: refuse the read itself instead.
    monkeypatch.setattr(np, "load", denied)
    npz_refused(path, "permission denied", "readable")


def test_a_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(np.random.default_rng(0).bytes(1000))
    npz_refused(path, "not a readable .npz", "np.savez")


def test_a_truncated_file(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, **good())
    path.write_bytes(path.read_bytes()[:300])
    npz_refused(path, "np.savez")


def test_a_single_npy_file(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.arange(3))
    npz_refused(path, "single .npy array")


def test_an_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    data = good()
    data["x_train"] = np.array([[1], [1, 2]], dtype=object)
    np.savez(path, **data)
    npz_refused(path, "array 'x_train' holds Python objects; save numeric arrays")


def test_a_missing_array_lists_the_file_names(tmp_path):
    path = tmp_path / "renamed.npz"
    data = good()
    data["X_test"] = data.pop("x_test")
    np.savez(path, **data)
    npz_refused(path, "x_test", "X_test", "the file has")


# --- call_loader --------------------------------------------------------------------------------------


def write_module(tmp_path, monkeypatch, name, source):
    """Module `name` in tmp_path, importable; forgotten after the test (names are unique per test)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


LOADER = """
    import numpy as np

    def load(n):
        y = np.arange(n) % 4
        return {"x_train": np.ones((n, 2)), "y_train": y, "x_test": [[0.5, 1.0]] * 4, "y_test": [0, 1, 2, 3],
                "extra": "ignored"}

    def as_list(n):
        return [np.ones((n, 2))]

    def broken(n):
        raise ValueError("no data here\\nsecond line")

    not_a_function = 3
"""


def loader_refused(target, kwargs, *names):
    with pytest.raises(DataError) as info:
        call_loader(target, kwargs)
    return one_line(info.value, f"data._target_={target}", *names)


def test_a_loader_function(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "my_loader", LOADER)
    loaded = call_loader("my_loader.load", {"n": 10})
    assert sorted(loaded) == sorted(arrays.ARRAYS)
    assert all(type(value) is np.ndarray for value in loaded.values())
    assert check_arrays(loaded, "data._target_=my_loader.load") == 4


def test_a_loader_module_that_is_not_found(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    message = loader_refused("absent_loader_module.load", {}, "PYTHONPATH", "'absent_loader_module'")
    assert "cannot import module" in message


def test_a_loader_that_fails_to_import(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "needs_more", "import absent_dependency_xyz\n")
    loader_refused("needs_more.load", {}, "importing module 'needs_more'", "absent_dependency_xyz")


def test_a_loader_that_is_missing_or_not_callable(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "half_loader", LOADER)
    loader_refused("half_loader.lod", {}, "no attribute 'lod'")
    loader_refused("half_loader.not_a_function", {}, "not a function")
    loader_refused("half_loader", {}, "dotted path")


def test_a_loader_returning_a_list(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "list_loader", LOADER)
    loader_refused("list_loader.as_list", {"n": 3}, "returned a list, expected a dict with x_train")


def test_a_loader_given_unexpected_keys(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "key_loader", LOADER)
    loader_refused("key_loader.load", {"n": 3, "size": 5}, "TypeError", "(n, size)", "'size'")


def test_a_loader_that_raises(tmp_path, monkeypatch):
    write_module(tmp_path, monkeypatch, "raising_loader", LOADER)
    message = loader_refused("raising_loader.broken", {"n": 3}, "the loader raised ValueError: no data here")
    assert "second line" not in message


def test_a_loader_value_that_is_not_an_array(tmp_path, monkeypatch):
    write_module(
        tmp_path,
        monkeypatch,
        "ragged_loader",
        """
        def load():
            return {"x_train": [[1], [1, 2]], "y_train": [0, 1], "x_test": [[1]], "y_test": [0]}
        """,
    )
    loader_refused("ragged_loader.load", {}, "'x_train'", "cannot be converted")

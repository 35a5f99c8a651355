"""A user's own dataset given as numpy arrays: read from an .npz file or returned by the user's loader
function, and refused in one line (DataError) when sweeper cannot train on it. numpy only, no JAX.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.task.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")  # required
OPTIONAL = ("x_val", "y_val")  # both or neither
SPLITS = (("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))
EXPECTED = "x_train, y_train, x_test, y_test (and optionally x_val, y_val)"
SAVE_HINT = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
X_KINDS = "biuf"  # bool, signed, unsigned, float: complex, object, strings, dates and records refused
Y_KINDS = "iu"


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, read with np.load(allow_pickle=False) fully into memory (not lazily).

    Only ARRAYS and OPTIONAL are returned (others are ignored); a missing required array is refused here,
    where the file's own names can still be listed.
    """
    file = Path(path).expanduser().absolute()
    source = f"data.path={file}"
    npz = _open_npz(file, source)
    with npz:
        _require(npz.files, source, "the file has")
        return {name: _read_member(npz, name, source) for name in ARRAYS + OPTIONAL if name in npz.files}


def _open_npz(file: Path, source: str) -> Any:
    """np.load's NpzFile for `file`, or DataError saying why it cannot be one."""
    if not file.exists():
        raise DataError(f"{source}: no such file; point data.path at your .npz file")
    if file.is_dir():
        raise DataError(f"{source}: is a directory; point data.path at the .npz file inside it")
    try:
        loaded = np.load(file, allow_pickle=False)
    except PermissionError as e:
        raise DataError(f"{source}: permission denied; make the file readable") from e
    except Exception as e:  # corrupt zip, pickles, text: all mean "not an .npz archive"
        raise DataError(f"{source}: not a readable .npz archive ({_describe(e)}); {SAVE_HINT}") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        # A plain .npy file: np.load hands back the single array itself.
        raise DataError(f"{source}: holds a single .npy array, not an .npz archive; {SAVE_HINT}")
    return loaded


def _read_member(npz: Any, name: str, source: str) -> np.ndarray:
    """Array `name` of the open archive, read whole; object arrays and broken members refused."""
    try:
        value = npz[name]
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{source}: array {name!r} holds Python objects; save numeric arrays "
                "(e.g. np.stack the examples into one array of numbers)"
            ) from e
        raise DataError(f"{source}: array {name!r} cannot be read ({_describe(e)}); {SAVE_HINT}") from e
    except Exception as e:  # bad CRC, truncated member, zlib errors
        raise DataError(f"{source}: array {name!r} cannot be read ({_describe(e)}); {SAVE_HINT}") from e
    if not isinstance(value, np.ndarray):
        # A zip member without the .npy format comes back as raw bytes.
        raise DataError(f"{source}: member {name!r} is not a .npy array; {SAVE_HINT}")
    return value


def call_loader(target: str, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Call the user's function `target` (a dotted path found on PYTHONPATH) with `kwargs`; its arrays.

    Only ARRAYS and OPTIONAL are returned, each converted with np.asarray; a missing required array is
    refused here, where the loader's own keys can still be listed.
    """
    source = f"data._target_={target}"
    function = _resolve(target, source)
    try:
        result = function(**kwargs)
    except TypeError as e:
        given = ", ".join(map(str, kwargs)) or "none"
        raise DataError(
            f"{source}: calling it with the keys given under data ({given}) raised TypeError: "
            f"{_first_line(e)}; give exactly the arguments the function takes"
        ) from e
    except Exception as e:
        raise DataError(f"{source}: the loader raised {_describe(e)}") from e
    if not isinstance(result, Mapping):
        raise DataError(f"{source}: returned a {type(result).__name__}, expected a dict with {EXPECTED}")
    _require(result.keys(), source, "the loader returned")
    arrays = {}
    for name in ARRAYS + OPTIONAL:
        if name in result:
            try:
                arrays[name] = np.asarray(result[name])
            except Exception as e:  # ragged lists, objects numpy cannot take
                raise DataError(
                    f"{source}: {name!r} cannot be converted to a numpy array ({_describe(e)}); "
                    "return numpy arrays of numbers"
                ) from e
    return arrays


def _resolve(target: str, source: str) -> Any:
    """The callable that dotted path `target` names.

    Resolved here with importlib rather than hydra.utils.get_method: that one logs its own error and its
    ImportError does not tell a module missing from PYTHONPATH from a module that fails to import.
    """
    parts = target.split(".") if isinstance(target, str) else []
    if len(parts) < 2 or not all(part.isidentifier() for part in parts):
        raise DataError(f"{source}: expected a dotted path module.function, e.g. data._target_=my_data.load")
    # The longest importable prefix is the module; the rest are attributes ('mod.Class.method' works too).
    for end in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:end])
        try:
            obj = importlib.import_module(module_name)
            break
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise DataError(f"{source}: importing module {module_name!r} raised {_describe(e)}") from e
        except Exception as e:  # the user's module itself fails while importing
            raise DataError(f"{source}: importing module {module_name!r} raised {_describe(e)}") from e
    else:
        module_name = target.rsplit(".", 1)[0]
        raise DataError(
            f"{source}: cannot import module {module_name!r} (is its folder on PYTHONPATH? "
            "e.g. PYTHONPATH=. python run.py ...)"
        )
    for attr in parts[end:]:
        if not hasattr(obj, attr):
            raise DataError(f"{source}: {module_name!r} has no attribute {attr!r}; check the name")
        obj, module_name = getattr(obj, attr), f"{module_name}.{attr}"
    if not callable(obj):
        raise DataError(f"{source}: is a {type(obj).__name__}, not a function; name the loader function")
    return obj


def check_arrays(arrays: Mapping[str, np.ndarray], source: str) -> int:
    """Refuse arrays sweeper cannot train on (DataError, one line naming the array, prefixed by `source`,
    e.g. "data.path=/abs/file.npz"); return the number of classes C (max training label + 1)."""
    _require(arrays.keys(), source, "given")
    if ("x_val" in arrays) != ("y_val" in arrays):
        given, absent = ("x_val", "y_val") if "x_val" in arrays else ("y_val", "x_val")
        raise DataError(f"{source}: {given} is given without {absent}; give both x_val and y_val or neither")
    splits = [(x, y) for x, y in SPLITS if x in arrays]
    for x_name, y_name in splits:
        _check_x(arrays[x_name], x_name, source)
        _check_y(arrays[y_name], y_name, source)
        _check_pair(arrays[x_name], arrays[y_name], x_name, y_name, source)
    example_shape = arrays["x_train"].shape[1:]
    for x_name, _ in splits[1:]:
        if arrays[x_name].shape[1:] != example_shape:
            raise DataError(
                f"{source}: {x_name} has examples of shape {arrays[x_name].shape[1:]} but x_train's are "
                f"{example_shape}; every split needs the same per-example shape"
            )
    for x_name, _ in splits:
        _check_finite(arrays[x_name], x_name, source)
    return _num_classes(arrays, [y for _, y in splits], source)


def _check_x(x: Any, name: str, source: str) -> None:
    """Refuse a feature array that is not numbers with one row per example."""
    _check_ndarray(x, name, source)
    if x.dtype.kind not in X_KINDS:
        raise DataError(
            f"{source}: {name} has dtype {x.dtype}; features must be bool, integer or float numbers "
            "(complex, object and string arrays are refused)"
        )
    if x.ndim < 1:
        raise DataError(f"{source}: {name} is a scalar (shape ()); expected one row per example: (N, ...)")


def _check_y(y: Any, name: str, source: str) -> None:
    """Refuse labels that are not a 1-D integer array."""
    _check_ndarray(y, name, source)
    if y.dtype.kind not in Y_KINDS:
        # Whole-number floats refused too: labels must be saved as the integers they are.
        raise DataError(
            f"{source}: {name} must hold integer class labels 0..C-1, got {y.dtype}; "
            f"save it as integers, e.g. {name}.astype(np.int64)"
        )
    if y.ndim != 1:
        raise DataError(
            f"{source}: {name} has shape {y.shape}; expected 1-D labels of shape (N,) "
            "(y.reshape(-1) for a column, y.argmax(axis=1) for one-hot)"
        )


def _check_pair(x: np.ndarray, y: np.ndarray, x_name: str, y_name: str, source: str) -> None:
    """Refuse an empty split and labels that do not match their examples one to one."""
    if len(x) == 0 and x_name == "x_val":
        raise DataError(f"{source}: x_val is given with 0 examples; give it examples or drop x_val and y_val")
    if len(x) == 0:
        raise DataError(f"{source}: {x_name} has 0 examples; {x_name} needs at least one example")
    if len(y) != len(x):
        raise DataError(
            f"{source}: {x_name} has {len(x)} examples but {y_name} has {len(y)} labels; "
            "give one label per example"
        )
    low = int(y.min())
    if low < 0:
        raise DataError(f"{source}: {y_name} holds negative label {low}; class labels must be 0..C-1")


def _check_finite(x: np.ndarray, name: str, source: str) -> None:
    """Refuse NaN or inf in a float feature array; integer and bool arrays cannot hold them."""
    if x.dtype.kind != "f":
        return
    # min and max propagate NaN and reach inf: ~10x faster than np.isfinite over CIFAR-sized arrays,
    # which only counts once something is wrong.
    if np.isfinite(x.min()) and np.isfinite(x.max()):
        return
    count = x.size - int(np.count_nonzero(np.isfinite(x)))
    raise DataError(f"{source}: {name} holds {count} NaN or inf values; replace or drop them")


def _num_classes(arrays: Mapping[str, np.ndarray], y_names: list[str], source: str) -> int:
    """C = max training label + 1; refuse fewer than 2 classes and labels that training never sees."""
    top = int(arrays["y_train"].max())
    if top < 1:
        raise DataError(f"{source}: y_train holds only label 0; a classifier needs at least 2 classes")
    for name in y_names[1:]:
        label = int(arrays[name].max())
        if label > top:
            raise DataError(
                f"{source}: {name} holds label {label}, but the training labels go to {top}: "
                "every class must appear in training"
            )
    return top + 1


def _check_ndarray(value: Any, name: str, source: str) -> None:
    """Refuse a value that is not a numpy array (call_loader converts; a direct caller must)."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{source}: {name} is a {type(value).__name__}, not a numpy array; pass np.asarray")


def _require(names: Iterable[str], source: str, what: str) -> None:
    """Refuse when a required array is missing, listing the names there are."""
    names = [str(name) for name in names]
    missing = [name for name in ARRAYS if name not in names]
    if missing:
        have = ", ".join(names) or "nothing"
        raise DataError(f"{source}: missing {', '.join(missing)} ({what}: {have}); sweeper needs {EXPECTED}")


def _describe(error: BaseException) -> str:
    """'TypeName: first line of its message', the message's first line only (DataError is one line)."""
    line = _first_line(error)
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


def _first_line(error: BaseException) -> str:
    """The first non-blank line of an exception's message, or ''."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "")

"""A restricted unpickler for CIFAR-10 batches and sweeper checkpoints.

`pickle.load` runs whatever callable a file names. These files only ever need numpy's array and scalar
reconstruction plus plain containers, so every other global is refused before it is imported.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

# Official CIFAR-10 files (Python 2, numpy 1.x) name `numpy.core`; numpy >= 2 writes `numpy._core`.
_ALLOWED = {
    (module, name)
    for module in (
        "numpy.core.multiarray",
        "numpy._core.multiarray",
        "numpy.core.numeric",
        "numpy._core.numeric",
        "numpy",
    )
    for name in ("_reconstruct", "scalar", "_frombuffer", "ndarray", "dtype")
}
_ALLOWED |= {("collections", "OrderedDict")}


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allowlist: it may be trying to run code."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise ForbiddenGlobal(f"refused to load global '{module}.{name}' (not array data)")
        if module.startswith("numpy.core"):  # avoid numpy 2's deprecation shim; same objects
            module = "numpy._core" + module[len("numpy.core") :]
            try:
                return super().find_class(module, name)
            except ModuleNotFoundError:  # numpy 1.x has no numpy._core
                module = "numpy.core" + module[len("numpy._core") :]
        return super().find_class(module, name)


def load(file: IO[bytes], encoding: str = "ASCII") -> Any:
    """Unpickle `file`, admitting only numpy arrays/scalars/dtypes and plain containers."""
    return _RestrictedUnpickler(file, encoding=encoding).load()

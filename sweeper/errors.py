"""Bad input in one line: which errors are the user's, and how one reads on a terminal.

Shared by run.py's glue (sweeper.cli) and sweeper's Hydra plugins, which import this and nothing of the app.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from sweeper.config import ConfigError
from sweeper.task.data import DataError


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input; anything else is a bug and keeps its traceback."""
    from sweeper.record.checkpoint import CheckpointError  # imports JAX: only once an error is being handled

    return ConfigError, DataError, CheckpointError, HydraException, OmegaConfBaseException


def one_line(error: BaseException | None) -> str:
    """An error as one line. Hydra/OmegaConf spread theirs over several lines and a chain of causes
    (`Could not override 'x'` caused by `Key 'x' not in 'Config'`), so those first lines are joined;
    sweeper's own errors already say everything in their first line."""
    inner = error
    while inner is not None:  # sweeper's own error raised inside Hydra or OmegaConf: its own words
        if isinstance(inner, ConfigError | DataError):
            return str(inner).strip().splitlines()[0]
        inner = inner.__cause__ or inner.__context__
    parts: list[str] = []
    while error is not None:
        text = str(error).strip()
        first = text.splitlines()[0].rstrip(".") if text else type(error).__name__
        if first not in parts:
            parts.append(first)
        if not isinstance(error, HydraException | OmegaConfBaseException):
            break
        error = error.__cause__
    return ": ".join(parts)


def exit_with(error: BaseException) -> NoReturn:
    """Print `error: <one line>` on stderr and exit with status 2."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)

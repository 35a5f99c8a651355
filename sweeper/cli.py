"""Command-line glue for `run.py`: dispatch on `mode`, return the objective, report bad input in one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from sweeper.config import ConfigError, Mode, validate
from sweeper.data import DataError


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input; anything else is a bug and keeps its traceback."""
    from sweeper.checkpoint import CheckpointError  # imports JAX: only once an error is being handled

    return ConfigError, DataError, CheckpointError, HydraException, OmegaConfBaseException


def run(cfg: Any) -> float:
    """Train (or, with mode=eval, evaluate a checkpoint) and return the objective a sweep maximises."""
    try:
        validate(cfg)
        from sweeper import train  # imported here so that --help and config errors answer without JAX

        if cfg.jax_cache_dir:
            train.enable_compilation_cache(cfg.jax_cache_dir)
        if Mode(cfg.mode) is Mode.eval:
            return train.evaluate_checkpoint(cfg, cfg.checkpoint)["test_accuracy"]
        return train.train_and_evaluate(cfg, HydraConfig.get().runtime.output_dir)["objective"]
    except _user_errors() as error:
        if HydraConfig.get().mode == RunMode.RUN:  # a multirun records the failed job instead
            exit_with(error)
        raise


def one_line(error: BaseException | None) -> str:
    """The first line of an error and of each error that caused it, joined: Hydra's are multi-line."""
    parts: list[str] = []
    while error is not None:
        text = str(error).strip()
        first = text.splitlines()[0].rstrip(".") if text else type(error).__name__
        if first not in parts:
            parts.append(first)
        error = error.__cause__
    return ": ".join(parts)


def exit_with(error: BaseException) -> NoReturn:
    """Print `error: <one line>` on stderr and exit with status 2."""
    print(f"error: {one_line(error)}", file=sys.stderr)
    sys.exit(2)


def main(hydra_main: Callable[[], Any]) -> None:
    """Call a `@hydra.main` function; bad overrides become one line on stderr and exit status 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for full tracebacks
        hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise instead of printing a multi-line report
    try:
        hydra_main()
    except _user_errors() as error:
        exit_with(error)

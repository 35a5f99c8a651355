"""The few places where sweeper relies on upstream code beyond its public surface, one adapter each.

Each adapter names the detail it relies on and raises (or reports) `UpstreamChanged` when that detail
is gone; tests/upstream_test.py checks every one against the installed versions, so that an upgrade
fails there, with the adapter's name, rather than in a sweep. Everything else goes through public APIs.

Importing this module imports nothing but the standard library: Hydra's plugins import it only when
they launch.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class UpstreamChanged(RuntimeError):
    """An upstream library no longer has the detail one of these adapters relies on."""


def multirun_callbacks(hydra_context: Any) -> list:
    """Hydra's list of the multirun's callbacks (`HydraContext.callbacks.callbacks`), to add one to.

    Hydra has no public way for a launcher to add a callback. It notifies the list in order at the
    starts and in reverse at the ends, so a callback inserted first runs last at `on_multirun_end`.
    """
    callbacks = getattr(getattr(hydra_context, "callbacks", None), "callbacks", None)
    if not isinstance(callbacks, list):
        raise UpstreamChanged(
            "Hydra's HydraContext.callbacks no longer keeps its callbacks in a list `.callbacks` "
            f"(got {type(callbacks).__name__}): sweeper.sweep.upstream.multirun_callbacks needs updating"
        )
    return callbacks


def failed_job_error(job_return: Any) -> BaseException:
    """The error a failed Hydra JobReturn holds, without raising it.

    Its public `return_value` raises the error (after printing the overrides); Hydra's `run_job` keeps
    it in the dataclass field `_return_value`. Where that is gone, the UpstreamChanged saying so is the
    job's error: the job still fails, and the sweep goes on.
    """
    error = getattr(job_return, "_return_value", None)
    if isinstance(error, BaseException):
        return error
    return UpstreamChanged(
        "Hydra's failed JobReturn no longer holds its error in `_return_value` "
        f"(got {type(error).__name__}): sweeper.sweep.upstream.failed_job_error needs updating"
    )


class _Waited:
    """Stands in for a submitted job whose JobReturn is already known, for upstream's `j.results()[0]`."""

    def __init__(self, job_return: Any) -> None:
        self._job_return = job_return

    def results(self) -> list:
        return [self._job_return]

    def result(self) -> Any:
        return self._job_return


@contextlib.contextmanager
def submitit_launch_submits_with(
    submit: Callable[[Callable[..., list], Any, list[tuple]], list],
) -> Iterator[None]:
    """Within it, hydra-submitit-launcher's `launch` builds its executor from the launcher's parameters,
    logs and numbers the jobs as it always does, and then returns `submit(map_array, fn, job_args)`
    instead of submitting and waiting itself: `map_array(fn, *iterables)` is that executor's own
    (one array of jobs, the submitit jobs returned), `fn` what upstream submits (the launcher) and
    `job_args` each job's arguments for it, in order: upstream's `__call__` arguments `(overrides,
    job_dir_key, job_num, job_id, singleton_state)`. `submit` returns one JobReturn per job.

    Its `launch` (1.2) builds `submitit.AutoExecutor(...)`, maps the parameters onto it, submits with one
    `map_array` and returns `[j.results()[0] for j in jobs]`; it has no hook for either, so the
    executor class is swapped for the call: a subclass whose `map_array` hands its arguments to `submit`.
    """
    import submitit

    auto_executor = submitit.AutoExecutor
    submitted = []

    class SubmittingExecutor(auto_executor):
        def map_array(self, fn: Callable[..., Any], *iterable: Any) -> list:
            returns = submit(super().map_array, fn, list(zip(*iterable, strict=True)))
            submitted.append(len(returns))
            return [_Waited(job_return) for job_return in returns]

    submitit.AutoExecutor = SubmittingExecutor
    try:
        yield
    finally:
        submitit.AutoExecutor = auto_executor
    if not submitted:  # the jobs' results came from upstream's own submission: valid, but not sweeper's
        log.warning(
            "%s",
            UpstreamChanged(
                "hydra-submitit-launcher's launch no longer submits through submitit.AutoExecutor's "
                "map_array: sweeper.sweep.upstream.submitit_launch_submits_with needs updating"
            ),
        )

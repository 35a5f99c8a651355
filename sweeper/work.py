"""What a model's training step computes, in floating-point operations: the measure of compute occupancy.

A slot pool's rows can be full while much of what they compute is padding (a narrow member padded to a
wide program's widths). Compute occupancy weighs each member-step by the work its own model needs, over
the work its row of the program did at the program's widths; `forward_flops` is that work's unit: XLA's
own count for one forward pass, on shapes (nothing runs). A training step costs a multiple of it that
is about the same at every width, so the ratio of two widths' forward passes is the ratio of their steps.
"""

from __future__ import annotations

import functools

from sweeper.task import models


@functools.lru_cache(maxsize=256)
def forward_flops(spec: models.Spec, batch: int) -> float:
    """FLOPs of one forward pass of `spec`'s model over `batch` inputs, as XLA counts them."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    model = models.abstract(spec)
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.dtype(spec.input_dtype))
    forward = lambda state, x: nnx.merge(model.graphdef, models.data_to_keys(state))(x)  # noqa: E731
    cost = jax.jit(forward).lower(model.state, x).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict on some jax versions
    return float((cost or {}).get("flops", 0.0))


# Members that share their batches (one seed, one start) share one matmul per layer, as wide as all of
# their units together. On a CPU that wide matmul gains up to about this many forward FLOPs per program
# step, and loses past it. `python benchmarks/cpu_rows.py --steps 1000` (2-core Xeon, jax 0.10.2, the
# article's MLP at batch 400), time per member-step against the run alone: 4 members of 120 units
# 0.77x, 2 of 240 0.87x, 2 of 480 1.00x, 4 of 240 0.89x, 4 of 480 1.19x, 8 of 120 0.86x. A CPU program
# stops there; an accelerator's does not.
CPU_PROGRAM_FLOPS = 1.25e9


def cpu_rows(spec: models.Spec, batch: int) -> int:
    """How many members of `spec`'s model at `batch` one program holds on a CPU (at least 1)."""
    return max(1, int(CPU_PROGRAM_FLOPS // max(forward_flops(spec, batch), 1.0)))

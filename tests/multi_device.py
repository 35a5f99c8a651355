"""Trains a fused grid on the first N local devices, as a child process of tests/devices_test.py (which
starts it with XLA_FLAGS=--xla_force_host_platform_device_count=4 to have 4 CPU devices).

    python tests/multi_device.py SCENARIO DEVICES OUT [OVERRIDE ...]

SCENARIO: grid (plain), halving, pbt, or pool (POOL through a slot pool of 3 rows: members that
diverge at step 50 free their rows early); each config trains into OUT/<i>.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from conftest import FAST, compose_config

from sweeper.train import fused
from sweeper.train.controllers import Halving, PopulationBasedTraining

# Eight configs: two widths (padded into one program), two learning rates, two data orders.
GRID = [(f"hidden={h}", f"lr={lr}", f"seed={s}") for h in (16, 32) for lr in (0.001, 0.003) for s in (0, 1)]
# The grid with two members that diverge at their step 50 (lr=100): rows free at staggered steps.
POOL = [("hidden=16", "lr=100", "seed=1") if i in (1, 4) else o for i, o in enumerate(GRID)]
# A population shares its seed (and here its width): eight of lr and reg.
POPULATION = [(f"lr={lr}", f"reg={reg}") for lr in (0.0003, 0.001, 0.003, 0.01) for reg in (0.1, 1.0)]


def main(scenario: str, devices: str, out: str, *overrides: str) -> None:
    grid = {"pbt": POPULATION, "pool": POOL}.get(scenario, GRID)
    cfgs = [compose_config(*FAST, *o, *overrides) for o in grid]
    controllers = {
        "grid": {},
        "halving": {"halving": Halving(rungs=(50, 100), keep=0.5)},
        "pbt": {"pbt": PopulationBasedTraining(interval=50, quantile=0.25, factors=(0.8, 1.25), seed=0)},
        "pool": {"max_batch": 3},
    }[scenario]
    workdirs = [Path(out) / str(i) for i in range(len(cfgs))]
    fused.train_group(cfgs, workdirs, devices=int(devices), **controllers)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # the log says how many devices a program spans
    main(*sys.argv[1:])

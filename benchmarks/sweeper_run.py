"""One sweeper run through the library entry point, timed from interpreter start; prints one JSON line.

Usage: python benchmarks/sweeper_run.py WORKDIR [overrides...]   (used by benchmarks/bench.py)
"""

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra import compose, initialize_config_dir  # noqa: E402

from sweeper import config, train  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    workdir, overrides = sys.argv[1], sys.argv[2:]
    config.register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    import_s = time.perf_counter() - STARTED  # interpreter, JAX/Flax/Hydra imports, config
    if cfg.jax_cache_dir:
        train.enable_compilation_cache(cfg.jax_cache_dir)
    metrics = train.train_and_evaluate(cfg, workdir)
    timings = metrics["timings"]
    print(
        json.dumps(
            {
                "import_s": import_s,
                **timings,
                "time_to_first_step_s": import_s + timings["first_step_s"],
                "wall_time_s": metrics["wall_time_s"],
                "test_accuracy": metrics["test_accuracy"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()

"""A Hydra app that is not sweeper's: its objective is a formula, with no training and no JAX.

The sweeper_optuna tests run it as users run theirs: `python formula.py -m ...`. Each job writes what
it saw to job.json in its folder.
"""

import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sweeper.trial import report


@hydra.main(version_base="1.3", config_path=".", config_name="formula")
def task(cfg: DictConfig):
    hydra_cfg = HydraConfig.get()
    seen = OmegaConf.to_container(cfg, resolve=True)
    folder = Path(hydra_cfg.runtime.output_dir)
    x, y = cfg.x, cfg.y
    value = x**2 + y**2
    steps, pruned = 0, False
    if cfg.objective in ("prune", "raise_pruned"):
        for step in range(cfg.steps):  # a value that stays the same: a threshold pruner decides at once
            steps = step + 1
            if pruned := report(value, step):
                break
    seen["_job"] = {"num": hydra_cfg.job.num, "steps": steps, "jax": "jax" in sys.modules}
    (folder / "job.json").write_text(json.dumps(seen))
    if pruned and cfg.objective == "raise_pruned":  # Optuna's own way to say it
        import optuna

        raise optuna.TrialPruned()
    if cfg.objective == "fail_odd" and hydra_cfg.job.num % 2:
        raise RuntimeError(f"job {hydra_cfg.job.num} is odd")
    if cfg.objective == "pair":  # Binh and Korn: two objectives to minimise
        return 4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2
    if cfg.objective == "text":
        return "not a number"
    return value


def configure(cfg: DictConfig, trial) -> None:
    """`hydra.sweeper.custom_search_space=formula.configure`: z near x, and a new key w."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_from_x, x + cfg.max_z_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    task()

"""sweeper: Hydra-configured sweeps of the 2017 two-layer CIFAR-10 MLP, in JAX/Flax.

Entry point for code: `sweeper.train.train_and_evaluate(cfg, workdir)`; for people: `python run.py`.
"""

__version__ = "0.1.0"

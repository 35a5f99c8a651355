"""`hydra/sweeper=sweeper_optuna`: an Optuna (>= 4) sweeper with pruning (see optuna_sweeper.py)."""

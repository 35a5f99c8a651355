"""`hydra/launcher=slurm`: Hydra's submitit SLURM launcher, with its own wait (see slurm_launcher.py)."""

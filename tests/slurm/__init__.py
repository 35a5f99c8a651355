"""A throwaway one-node SLURM cluster for tests/slurm_test.py (cluster.py, with the config templates here)."""

"""`hydra/launcher=fused`: train a sweep's configs as few vmapped programs (see fused_launcher.py)."""

"""The generic training machinery: a run or a whole sweep as compiled programs, and what acts on them.

`train_and_evaluate(cfg, workdir)` is the entry point for code (sweeper.train.run).
"""

from sweeper.train.run import enable_compilation_cache, evaluate_checkpoint, restore_model, train_and_evaluate

__all__ = ["enable_compilation_cache", "evaluate_checkpoint", "restore_model", "train_and_evaluate"]

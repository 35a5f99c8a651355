"""The data's error, shared by every source (sweeper.task.cifar10, sweeper.task.arrays) and their
dispatcher (sweeper.task.data, which hands it on as data.DataError)."""


class DataError(RuntimeError):
    """The data cannot be found, fetched, verified, parsed or used; the message says what to do."""

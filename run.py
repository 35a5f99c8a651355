"""Train the 2017 two-layer CIFAR-10 MLP; `python run.py --help` lists every key, `-m` sweeps them.

The app itself is sweeper.app, which an installed sweeper also runs as `sweeper` and `python -m sweeper`.
"""

from sweeper import app

if __name__ == "__main__":
    app.main()

"""`python -m sweeper ...`: sweeper's app (sweeper.app), as `python run.py ...` runs it in a clone."""

from sweeper import app

if __name__ == "__main__":
    app.main()

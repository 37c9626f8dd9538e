"""One-shot schema migration (`mlflow db upgrade`) with the store URI read from the environment,
so the database password never appears in a process list."""

import os

from mlflow.db import upgrade

if __name__ == "__main__":
    upgrade([os.environ["MLFLOW_BACKEND_STORE_URI"]])

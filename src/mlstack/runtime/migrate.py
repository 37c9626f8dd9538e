"""One-shot schema migration (`mlflow db upgrade`) with the store URI read from the environment,
so the database password never appears in a process list. With --check, only whether one is due:
exit 0 when the schema is the newest this MLflow knows, SCHEMA_OUTDATED when a migration is due."""

import os
import sys

SCHEMA_OUTDATED = 3

if __name__ == "__main__":
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    if sys.argv[1:] == ["--check"]:
        import sqlalchemy
        from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

        current = _get_schema_version(sqlalchemy.create_engine(uri)) == _get_latest_schema_revision()
        sys.exit(0 if current else SCHEMA_OUTDATED)
    from mlflow.db import upgrade

    upgrade([uri])

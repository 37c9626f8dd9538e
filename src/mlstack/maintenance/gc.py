"""`mlstack gc`: permanently delete runs that were deleted (moved to the trash), with their artifacts.

`mlflow gc` asks the artifact repository to delete a run's artifacts, which fails for the proxied
artifact store (`mlflow-artifacts:/` URIs; mlflow#13188, #15461, #19467), so deleted runs keep
their objects forever. Here the objects under the run's artifact root are deleted in the bucket
directly, then the run's rows, with MLflow's own store method (the one `mlflow gc` uses). A run
whose artifacts live somewhere else than this stack's bucket is left alone and named.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlstack.errors import ConfigError
from mlstack.maintenance.bucket import bucket_objects, delete_objects
from mlstack.mlflow_compat import delete_run_for_good, deleted_run_ids
from mlstack.settings import Settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(value: str) -> timedelta:
    """`30d`, `12h`, `90m` or `45s`."""
    match = _DURATION.match(value.strip())
    if not match:
        raise ConfigError(
            f"--older-than {value!r} is not a duration: write a number and a unit, e.g. 30d, 12h, 90m, 45s"
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class GcReport:
    runs: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    #: Deleted runs left alone: their artifacts are not in this stack's bucket.
    skipped: dict[str, str] = field(default_factory=dict)


def _bucket_prefix(settings: Settings, artifact_uri: str) -> str | None:
    """The run's artifact root as a key prefix in the stack's bucket, or None when it is elsewhere."""
    parts = urlsplit(artifact_uri)
    proxied = parts.scheme == "mlflow-artifacts"  # the server's --artifacts-destination: this bucket
    if not (proxied or (parts.scheme == "s3" and parts.netloc == settings.mlflow_artifact_bucket)):
        return None
    return parts.path.strip("/") + "/"


def collect_garbage(settings: Settings, older_than: timedelta | None = None, dry_run: bool = False) -> GcReport:
    """Delete (or with `dry_run`, count) the runs deleted at least `older_than` ago, and their objects."""
    store = SqlAlchemyStore(settings.backend_store_uri(), "mlflow-artifacts:/")
    report = GcReport()
    older_than_ms = int(older_than.total_seconds() * 1000) if older_than else 0
    try:
        for run_id in deleted_run_ids(store, older_than_ms):
            artifact_uri = store.get_run(run_id).info.artifact_uri
            prefix = _bucket_prefix(settings, artifact_uri)
            if prefix is None:
                report.skipped[run_id] = artifact_uri
                continue
            objects = list(bucket_objects(settings, prefix))
            report.objects += len(objects)
            report.bytes += sum(size for _, size in objects)
            report.runs.append(run_id)
            if dry_run:
                continue
            delete_objects(settings, [key for key, _ in objects])
            delete_run_for_good(store, run_id)
    finally:
        store.engine.dispose()
    return report

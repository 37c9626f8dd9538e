"""Before bootstrap changes anything: every service its steps talk to must answer."""

from __future__ import annotations

from mlstack.errors import StackNotReadyError
from mlstack.runtime.health import http_ok, postgres_ok
from mlstack.settings import Settings


def require_mlflow_stack(settings: Settings, storage_only: bool = False, command: str = "mlstack bootstrap") -> None:
    """Raise StackNotReadyError naming the first service of the MLflow stack that does not answer, and
    that `command` can run once it does."""
    fix = f"start the stack with `make up` (`mlstack status` shows each service), then run `{command}` again"
    probes = [("MinIO", settings.minio_url, lambda: http_ok(f"{settings.minio_url}/minio/health/live"))]
    if not storage_only:
        probes = [
            (
                "PostgreSQL",
                f"{settings.postgres_host}:{settings.postgres_port} (as {settings.postgres_user})",
                lambda: postgres_ok(settings.postgres_dsn()),
            ),
            *probes,
            ("the MLflow server", settings.mlflow_url, lambda: http_ok(f"{settings.mlflow_url}/health")),
        ]
    for service, where, answers in probes:
        if not answers():
            raise StackNotReadyError(f"{service} does not answer at {where}: {fix}.")

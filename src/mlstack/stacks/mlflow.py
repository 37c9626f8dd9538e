"""The MLflow stack: PostgreSQL (backend store and the auth app's users), MinIO (artifacts), the
tracking server, and its optional TLS front. infra/mlflow/compose.yaml runs the same."""

from mlstack.stacks import Port, Service, Stack

#: Our images (services/): the bootstrap steps (the `mlstack` CLI) and the tracking server with the store plugin.
BOOTSTRAP_IMAGE = "mlstack/bootstrap:0.2.2"
SERVER_IMAGE = "mlstack/mlflow-server:3.17.2-mlstack.6"

MLFLOW_STACK = Stack(
    "mlflow",
    (
        # refuses placeholder or missing secrets before anything starts
        Service("preflight", BOOTSTRAP_IMAGE, one_shot=True),
        Service(
            "postgres",
            "postgres:15-bookworm",
            waits_for=("preflight",),
            ports=(Port("POSTGRES_PORT", 5432),),
            health="postgres",
            data=("postgres-data",),
        ),
        Service(
            "minio",
            "minio/minio:RELEASE.2025-09-07T16-13-09Z",
            waits_for=("preflight",),
            ports=(Port("MINIO_API_PORT", 9000), Port("MINIO_CONSOLE_PORT", 9001)),
            health="/minio/health/live",
            data=("minio-data",),
        ),
        # the artifact bucket and the server's own S3 account
        Service("storage-bootstrap", BOOTSTRAP_IMAGE, waits_for=("minio",), one_shot=True),
        # the server's database role and the auth app's database
        Service("database-bootstrap", BOOTSTRAP_IMAGE, waits_for=("postgres",), one_shot=True),
        # `mlflow db upgrade`
        Service("migrate", SERVER_IMAGE, waits_for=("database-bootstrap",), one_shot=True),
        Service(
            "mlflow",
            SERVER_IMAGE,
            waits_for=("postgres", "minio", "migrate", "storage-bootstrap"),
            ports=(Port("MLFLOW_PORT", 5000),),
            health="/health",
        ),
        Service(
            "tls-proxy",
            "caddy:2.6.2-alpine",
            waits_for=("mlflow",),
            ports=(Port("MLFLOW_TLS_PORT", 5443),),
            health="/health",
            profile="tls",
        ),
    ),
)

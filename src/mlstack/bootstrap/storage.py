"""The artifact store's bootstrap: the bucket (as the admin), and the MLflow server's own identity,
checked to work in that bucket.

The stack's SeaweedFS takes both identities from its identities file (`seaweedfs_identities`,
written before it starts): the admin, and the server confined to the bucket. Any other S3 works
the same once its admin may create the bucket and the server's key may read and write in it.
"""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.errors import ConfigError
from mlstack.settings import Settings

#: What the server's identity may do, and only in the artifact bucket (SeaweedFS's action names).
SERVER_ACTIONS = ("Read", "Write", "List", "Tagging")


def s3_client(settings: Settings, access_key: str, secret_key: str, endpoint: str | None = None):
    """A boto3 S3 client for the stack's artifact store (or `endpoint`) with the given identity."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint or settings.s3_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def admin_s3(settings: Settings):
    return s3_client(settings, settings.s3_admin_access_key, settings.s3_admin_secret_key.get_secret_value())


def server_s3(settings: Settings):
    return s3_client(settings, settings.mlflow_s3_access_key, settings.mlflow_s3_secret_key.get_secret_value())


def seaweedfs_identities(settings: Settings) -> dict:
    """SeaweedFS's S3 identities file: the admin, and the server limited to the artifact bucket."""
    bucket = settings.mlflow_artifact_bucket
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [
                    {
                        "accessKey": settings.s3_admin_access_key,
                        "secretKey": settings.s3_admin_secret_key.get_secret_value(),
                    }
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "mlflow-server",
                "credentials": [
                    {
                        "accessKey": settings.mlflow_s3_access_key,
                        "secretKey": settings.mlflow_s3_secret_key.get_secret_value(),
                    }
                ],
                "actions": [f"{action}:{bucket}" for action in SERVER_ACTIONS],
            },
        ]
    }


def create_bucket_if_missing(s3, bucket: str) -> bool:
    """Create `bucket` with the client `s3` unless it exists; True when it was created."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
    s3.create_bucket(Bucket=bucket)
    return True


def ensure_bucket(settings: Settings) -> StepResult:
    bucket = settings.mlflow_artifact_bucket
    created = create_bucket_if_missing(admin_s3(settings), bucket)
    return StepResult("artifact bucket", Outcome.CREATED if created else Outcome.PRESENT, bucket)


def check_server_identity(settings: Settings) -> StepResult:
    """The server's key lists the bucket; otherwise a ConfigError saying what its S3 must grant."""
    try:
        server_s3(settings).list_objects_v2(Bucket=settings.mlflow_artifact_bucket, MaxKeys=1)
    except ClientError as error:
        code = error.response["Error"]["Code"]
        raise ConfigError(
            f"the MLflow server's S3 key {settings.mlflow_s3_access_key} cannot list bucket "
            f"{settings.mlflow_artifact_bucket} at {settings.s3_url} ({code}): the store must grant it read, "
            "write, list and delete in that bucket (the stack's SeaweedFS takes it from .env when it starts)"
        ) from error
    return StepResult("MLflow server identity", Outcome.PRESENT, f"{settings.mlflow_s3_access_key}: bucket only")


STORAGE_STEPS = (
    Step("artifact bucket", ensure_bucket),
    Step("MLflow server identity", check_server_identity),
)

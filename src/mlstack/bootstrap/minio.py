"""MinIO bootstrap: the artifact bucket, a policy limited to it, and the MLflow server's own account.

The server never holds the root credentials: it authenticates as MLFLOW_S3_ACCESS_KEY, whose
policy grants that one bucket and nothing else.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from minio import MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.settings import Settings


def s3_client(settings: Settings, access_key: str, secret_key: str):
    """A boto3 S3 client for the stack's MinIO with the given account."""
    return boto3.client(
        "s3",
        endpoint_url=settings.minio_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def root_s3(settings: Settings):
    return s3_client(settings, settings.minio_root_user, settings.minio_root_password.get_secret_value())


def server_s3(settings: Settings):
    return s3_client(settings, settings.mlflow_s3_access_key, settings.mlflow_s3_secret_key.get_secret_value())


def minio_admin(settings: Settings) -> MinioAdmin:
    url = urlsplit(settings.minio_url)
    return MinioAdmin(
        endpoint=url.netloc,
        credentials=StaticProvider(settings.minio_root_user, settings.minio_root_password.get_secret_value()),
        secure=url.scheme == "https",
    )


def policy_name(settings: Settings) -> str:
    return f"{settings.mlflow_artifact_bucket}-readwrite"


def bucket_policy(bucket: str) -> dict:
    """Read, write, list and delete inside `bucket`; nothing elsewhere."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def ensure_bucket(settings: Settings) -> StepResult:
    s3, bucket = root_s3(settings), settings.mlflow_artifact_bucket
    try:
        s3.head_bucket(Bucket=bucket)
        return StepResult("artifact bucket", Outcome.PRESENT, bucket)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
    s3.create_bucket(Bucket=bucket)
    return StepResult("artifact bucket", Outcome.CREATED, bucket)


def ensure_policy(settings: Settings) -> StepResult:
    admin, name = minio_admin(settings), policy_name(settings)
    wanted = bucket_policy(settings.mlflow_artifact_bucket)
    try:
        current = json.loads(admin.policy_info(name))
    except MinioAdminException:
        current = None
    if current is not None and _statements(current) == _statements(wanted):
        return StepResult("bucket policy", Outcome.PRESENT, name)
    admin.policy_add(name, policy=wanted)
    return StepResult("bucket policy", Outcome.CREATED if current is None else Outcome.UPDATED, name)


def _statements(policy: dict) -> list[tuple]:
    """A policy's statements in a canonical order (MinIO hands actions back reordered)."""
    return sorted(
        (st["Effect"], tuple(sorted(st["Action"])), tuple(sorted(st["Resource"]))) for st in policy["Statement"]
    )


def ensure_server_account(settings: Settings) -> StepResult:
    """The MLflow server's account, with its secret from .env and the bucket policy attached."""
    admin, access_key = minio_admin(settings), settings.mlflow_s3_access_key
    try:
        info = json.loads(admin.user_info(access_key))
    except MinioAdminException:
        info = None
    if info is not None and _secret_works(settings) and policy_name(settings) in info.get("policyName", ""):
        return StepResult("MLflow server account", Outcome.PRESENT, access_key)
    admin.user_add(access_key, settings.mlflow_s3_secret_key.get_secret_value())
    if info is None or policy_name(settings) not in info.get("policyName", ""):
        admin.attach_policy([policy_name(settings)], user=access_key)
    return StepResult("MLflow server account", Outcome.CREATED if info is None else Outcome.UPDATED, access_key)


def _secret_works(settings: Settings) -> bool:
    try:
        server_s3(settings).head_bucket(Bucket=settings.mlflow_artifact_bucket)
        return True
    except ClientError:
        return False


MINIO_STEPS = (
    Step("artifact bucket", ensure_bucket),
    Step("bucket policy", ensure_policy),
    Step("MLflow server account", ensure_server_account),
)

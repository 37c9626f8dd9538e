"""Moving a stack made before SeaweedFS: every object of its MinIO copied into the artifact store,
each one verified, MinIO's own data left in place.

Each object is read once from MinIO (its sha256 taken on the way, held in a spooled file: memory
stays bounded), written to the same bucket and key with the digest in its metadata, and read back
to compare. An object already there with the same digest is kept, so a move that was interrupted
simply runs again. Only when every bucket's count and every digest match is the move recorded
(`RECORD` in the state folder); until then `mlstack up` starts MinIO and runs it again.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from botocore.exceptions import ClientError

from mlstack.bootstrap.storage import admin_s3, create_bucket_if_missing, s3_client
from mlstack.errors import MlstackError
from mlstack.settings import Settings

#: The record of a finished move, in the state folder.
RECORD = "minio-move.json"
#: The object metadata holding the digest the move verified.
DIGEST_KEY = "mlstack-sha256"
#: Bytes of an object held in memory before its copy spills to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024
PIECE = 1024 * 1024


@dataclass
class MoveReport:
    source: str
    destination: str
    #: bucket -> objects now verified in the destination
    buckets: dict[str, int] = field(default_factory=dict)
    copied: int = 0
    already_there: int = 0
    bytes: int = 0


def record_path(settings: Settings) -> Path:
    return settings.state_path / RECORD


def native_minio_data(settings: Settings) -> Path:
    """Where the native runtime kept MinIO's data before SeaweedFS."""
    return settings.state_path / "native" / "minio"


def move_pending(settings: Settings) -> bool:
    """The native stack has MinIO data and no record of a finished move."""
    return (native_minio_data(settings) / ".minio.sys").is_dir() and not record_path(settings).exists()


def minio_s3(settings: Settings, endpoint: str):
    return s3_client(settings, settings.minio_root_user, settings.minio_root_password.get_secret_value(), endpoint)


def move_from_minio(settings: Settings, endpoint: str, tell: Callable[[str], None] = lambda line: None) -> MoveReport:
    """Copy and verify every bucket and object of the MinIO at `endpoint` (its root account from .env)
    into the artifact store (its admin); raise MlstackError naming the first object that differs."""
    source, destination = minio_s3(settings, endpoint), admin_s3(settings)
    report = MoveReport(source=endpoint, destination=settings.s3_url)
    for bucket in [item["Name"] for item in source.list_buckets().get("Buckets", [])]:
        create_bucket_if_missing(destination, bucket)
        keys = [
            (item["Key"], item["Size"])
            for page in source.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        ]
        for key, size in keys:
            copied = _copy_verified(source, destination, bucket, key)
            report.copied += copied
            report.already_there += not copied
            report.bytes += size
        present = {
            item["Key"]
            for page in destination.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        }
        missing = {key for key, _ in keys} - present
        if missing:
            raise MlstackError(
                f"{len(missing)} objects of bucket {bucket} are not in {settings.s3_url}: {sorted(missing)[:5]}"
            )
        report.buckets[bucket] = len(keys)
        tell(f"  {bucket}: {len(keys)} objects verified")
    return report


def write_record(settings: Settings, report: MoveReport, kept_at: str) -> Path:
    """Record the finished move (and where MinIO's data stays) so `up` does not run it again."""
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(
        json.dumps({**asdict(report), "minio_data": kept_at, "finished": datetime.now(UTC).isoformat()}, indent=2)
    )
    path.chmod(0o600)
    return path


def _copy_verified(source, destination, bucket: str, key: str) -> bool:
    """Copy one object unless the destination holds it with the same digest; False when it did."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        digest = _sha256(source.get_object(Bucket=bucket, Key=key)["Body"], spool)
        try:
            kept = destination.head_object(Bucket=bucket, Key=key)["Metadata"].get(DIGEST_KEY)
        except ClientError:
            kept = None
        if kept == digest:
            return False
        spool.seek(0)
        destination.upload_fileobj(spool, bucket, key, ExtraArgs={"Metadata": {DIGEST_KEY: digest}})
    written = _sha256(destination.get_object(Bucket=bucket, Key=key)["Body"])
    if written != digest:
        raise MlstackError(f"{bucket}/{key}: the copy reads back as sha256 {written}, MinIO's is {digest}")
    return True


def _sha256(body, copy: IO[bytes] | None = None) -> str:
    digest = hashlib.sha256()
    for piece in iter(lambda: body.read(PIECE), b""):
        digest.update(piece)
        if copy is not None:
            copy.write(piece)
    return digest.hexdigest()

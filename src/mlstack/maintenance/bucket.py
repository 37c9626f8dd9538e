"""The MLflow stack's artifact bucket, as backup, restore and gc walk and empty it (the store's admin)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mlstack.bootstrap.storage import admin_s3
from mlstack.settings import Settings

DELETE_BATCH = 1000  # S3's limit per DeleteObjects request


def bucket_objects(settings: Settings, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(key, size) of every object under `prefix`, all pages."""
    pages = (
        admin_s3(settings)
        .get_paginator("list_objects_v2")
        .paginate(Bucket=settings.mlflow_artifact_bucket, Prefix=prefix)
    )
    for page in pages:
        for item in page.get("Contents", []):
            yield item["Key"], item["Size"]


def delete_objects(settings: Settings, keys: Iterable[str]) -> None:
    s3, keys = admin_s3(settings), list(keys)
    for start in range(0, len(keys), DELETE_BATCH):
        chunk = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
        s3.delete_objects(Bucket=settings.mlflow_artifact_bucket, Delete={"Objects": chunk, "Quiet": True})

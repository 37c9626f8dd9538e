"""Data versioning with ClearML Datasets: create a version from files, get one, list them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from clearml import Dataset

from mlstack.settings import Settings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.errors import ClearMLConfigError


def create_dataset_version(
    dataset_name: str,
    dataset_project: str,
    files: list[str | Path],
    version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> str:
    """Upload `files` (files or folders) as a new, finalized version; returns the dataset id.

    The newest existing version becomes its parent, so unchanged files are not stored twice.
    """
    missing = [str(path) for path in files if not Path(path).exists()]
    if not files or missing:
        raise ClearMLConfigError(
            f"dataset {dataset_name!r}: files {missing or files} do not exist: pass existing paths"
        )
    require_server(settings or Settings.load())
    parents = [
        found["id"]
        for found in Dataset.list_datasets(
            dataset_project=dataset_project, partial_name=dataset_name, only_completed=True
        )
        if found["name"] == dataset_name
    ][:1]
    dataset = Dataset.create(
        dataset_name=dataset_name,
        dataset_project=dataset_project,
        dataset_version=version,
        parent_datasets=parents or None,
    )
    for path in files:
        dataset.add_files(path=str(path))
    if metadata:
        dataset.set_metadata(pd.DataFrame([dict(metadata)]), metadata_name="metadata")
    dataset.upload()
    dataset.finalize()
    return dataset.id


def get_dataset_version(
    dataset_name: str, dataset_project: str, version: str | None = None, settings: Settings | None = None
) -> Path:
    """A read-only local copy of that version (newest when `version` is None)."""
    require_server(settings or Settings.load())
    dataset = Dataset.get(dataset_name=dataset_name, dataset_project=dataset_project, dataset_version=version)
    return Path(dataset.get_local_copy())


def list_dataset_versions(
    dataset_project: str, dataset_name: str | None = None, settings: Settings | None = None
) -> pd.DataFrame:
    """Versions in the project: id, name, version, created, tags."""
    require_server(settings or Settings.load())
    found = Dataset.list_datasets(dataset_project=dataset_project, partial_name=dataset_name)
    rows = [
        {key: entry.get(key) for key in ("id", "name", "version", "created", "tags")}
        for entry in found
        if dataset_name is None or entry["name"] == dataset_name
    ]
    return pd.DataFrame(rows, columns=["id", "name", "version", "created", "tags"])

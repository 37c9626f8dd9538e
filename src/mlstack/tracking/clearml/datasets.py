"""Data versioning with ClearML Datasets: create a version from files, get one, list them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from clearml import Dataset

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.errors import ClearMLConfigError

_VERSION_COLUMNS = ["id", "name", "version", "created", "tags"]


def _versions_newest_first(dataset_project: str, dataset_name: str | None) -> list[dict]:
    """Completed versions in exactly `dataset_project` (not its subprojects), of exactly `dataset_name`
    (every name when None), newest first by creation time.

    The server returns natural (insertion) order and searches `partial_name` as a regex anywhere in
    the name, so the name is sent escaped and anchored, and both name and project are checked here.
    """
    found = Dataset.list_datasets(
        dataset_project=dataset_project,
        partial_name=f"^{re.escape(dataset_name)}$" if dataset_name is not None else None,
        only_completed=True,
        recursive_project_search=False,
    )
    matching = [
        entry
        for entry in found
        if entry["project"] == dataset_project and (dataset_name is None or entry["name"] == dataset_name)
    ]
    # Reversing a stable ascending sort puts the later-listed (later-inserted) first on equal times.
    return sorted(matching, key=lambda entry: entry["created"])[::-1]


def create_dataset_version(
    dataset_name: str,
    dataset_project: str,
    files: list[str | Path],
    version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    settings: ClientSettings | None = None,
) -> str:
    """Upload `files` (files or folders) as a new, finalized version; returns the dataset id.

    Its parent is the newest (by creation time) completed version of exactly this name in exactly
    this project, so unchanged files are not stored twice.
    """
    missing = [str(path) for path in files if not Path(path).exists()]
    if not files or missing:
        raise ClearMLConfigError(
            f"dataset {dataset_name!r}: files {missing or files} do not exist: pass existing paths"
        )
    require_server(settings or ClientSettings.load())
    newest = _versions_newest_first(dataset_project, dataset_name)[:1]
    dataset = Dataset.create(
        dataset_name=dataset_name,
        dataset_project=dataset_project,
        dataset_version=version,
        parent_datasets=[entry["id"] for entry in newest] or None,
    )
    for path in files:
        dataset.add_files(path=str(path))
    if metadata:
        dataset.set_metadata(pd.DataFrame([dict(metadata)]), metadata_name="metadata")
    dataset.upload()
    dataset.finalize()
    return dataset.id


def get_dataset_version(
    dataset_name: str, dataset_project: str, version: str | None = None, settings: ClientSettings | None = None
) -> Path:
    """A read-only local copy of that version (newest when `version` is None)."""
    require_server(settings or ClientSettings.load())
    dataset = Dataset.get(dataset_name=dataset_name, dataset_project=dataset_project, dataset_version=version)
    return Path(dataset.get_local_copy())


def list_dataset_versions(
    dataset_project: str, dataset_name: str | None = None, settings: ClientSettings | None = None
) -> pd.DataFrame:
    """Completed versions in the project (of `dataset_name` only, when given), newest first by
    creation time: id, name, version, created, tags."""
    require_server(settings or ClientSettings.load())
    rows = [
        {key: entry.get(key) for key in _VERSION_COLUMNS}
        for entry in _versions_newest_first(dataset_project, dataset_name)
    ]
    return pd.DataFrame(rows, columns=_VERSION_COLUMNS)

"""Model registry on ClearML models: register a weights file, list, load by version, publish."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from clearml import Model, OutputModel, Task
from clearml.model import BaseModel

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.errors import ClearMLConfigError, ClearMLUploadError


def register_model(
    model_path: str | Path,
    model_name: str,
    project_name: str,
    tags: list[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    task_id: str | None = None,
    settings: ClientSettings | None = None,
) -> str:
    """A new version of `model_name` from a weights file, attached to `task_id` (or a new
    registration task); returns the model id.

    The weights are uploaded to `settings.clearml_output_destination` (the fileserver unless
    CLEARML_DEFAULT_OUTPUT_URI says otherwise) before this returns."""
    path = Path(model_path)
    if not path.is_file():
        raise ClearMLConfigError(f"model file {path} does not exist: save the model before registering it")
    settings = settings or ClientSettings.load()
    require_server(settings)
    task = (
        Task.get_task(task_id=task_id)
        if task_id
        else Task.create(project_name=project_name, task_name=f"register {model_name}", task_type=Task.TaskTypes.custom)
    )
    metadata = dict(metadata or {})
    model = OutputModel(task=task, name=model_name, tags=tags, config_dict=metadata or None)
    upload_weights(model, path, settings.clearml_output_destination)
    set_typed_metadata(model, metadata)
    return model.id


def upload_weights(model: OutputModel, path: Path, destination: str) -> str:
    """Upload the weights to `destination` before returning their URL (never a local file:// one)."""
    try:
        return model.update_weights(
            weights_filename=str(path), upload_uri=destination, auto_delete_file=False, async_enable=False
        )
    except ValueError as error:  # what the SDK's storage drivers raise for a refused upload
        raise ClearMLUploadError(
            f"uploading {path} (model {model.name!r}) to {destination} failed: {error}. Check that the destination "
            "answers (`mlstack status` for the fileserver) or set CLEARML_DEFAULT_OUTPUT_URI"
        ) from error


def set_typed_metadata(model: BaseModel, metadata: Mapping[str, Any]) -> None:
    """Each entry as registry metadata, typed by its Python type (float, int, str, ...); numpy numbers
    (what scikit-learn's metrics return) are stored as the Python numbers they hold."""
    for key, value in metadata.items():
        if isinstance(value, numbers.Number) and hasattr(value, "item"):  # numpy; Python numbers have no .item
            value = value.item()
        model.set_metadata(key, str(value), v_type=type(value).__name__)


def list_models(
    project_name: str | None = None,
    model_name: str | None = None,
    only_published: bool = False,
    settings: ClientSettings | None = None,
) -> pd.DataFrame:
    """Registered models (newest first): id, name, tags, published, task and weights URL."""
    require_server(settings or ClientSettings.load())
    models = Model.query_models(project_name=project_name, model_name=model_name, only_published=only_published)
    columns = ["model_id", "name", "tags", "published", "task_id", "url"]
    return pd.DataFrame(
        [[m.id, m.name, list(m.tags or []), m.published, m.task, m.url] for m in models], columns=columns
    )


def find_model(
    model_name: str,
    version: str | int = "latest",
    project_name: str | None = None,
    settings: ClientSettings | None = None,
) -> Model:
    """Version 'latest', a 1-based version number (in registration order) or a model id."""
    require_server(settings or ClientSettings.load())
    versions = list(reversed(Model.query_models(project_name=project_name, model_name=model_name)))
    if not versions:
        raise ClearMLConfigError(
            f"no model named {model_name!r} is registered" + (f" in project {project_name!r}" if project_name else "")
        )
    if version == "latest":
        return versions[-1]
    if isinstance(version, int) or str(version).isdigit():
        number = int(version)
        if not 1 <= number <= len(versions):
            raise ClearMLConfigError(f"model {model_name!r} has versions 1-{len(versions)}, not {version}")
        return versions[number - 1]
    for model in versions:
        if model.id == version:
            return model
    raise ClearMLConfigError(f"model {model_name!r} has no version {version!r}: use 'latest', a number or a model id")


def load_model(
    model_name: str,
    version: str | int = "latest",
    project_name: str | None = None,
    settings: ClientSettings | None = None,
) -> Path:
    """Download the weights of that version; returns the local file."""
    return Path(find_model(model_name, version, project_name, settings).get_local_copy(raise_on_error=True))


def publish_model(
    model_name: str,
    version: str | int = "latest",
    project_name: str | None = None,
    settings: ClientSettings | None = None,
) -> str:
    """Publish (lock) that version; returns its id."""
    model = find_model(model_name, version, project_name, settings)
    model.publish()
    return model.id

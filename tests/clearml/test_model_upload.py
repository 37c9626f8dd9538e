"""Registered model weights leave the machine: the real SDK against a stand-in apiserver and
fileserver uploads them to the output destination (the fileserver unless configured) and the
registry records that http URL, never a local file:// path."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from clearml_helpers import online_settings
from fake_apiserver import shared_servers

from mlstack.tracking.clearml.errors import ClearMLUploadError
from mlstack.tracking.clearml.registry import load_model, register_model
from mlstack.tracking.clearml.tracker import ClearMLTracker


@pytest.fixture(scope="module")
def servers(isolated_sdk):
    return shared_servers()


def stored_weights(servers, url: str) -> bytes:
    """The bytes the fileserver holds at `url`."""
    _, files = servers
    assert url.startswith(files.url + "/"), f"weights registered at {url}, not on the fileserver {files.url}"
    return files.files[urlparse(url).path.strip("/")]


def test_tracker_uploads_registered_weights_to_the_fileserver(servers, tmp_path):
    api, _ = servers
    settings = online_settings(tmp_path / "checkout", servers)
    weights = tmp_path / "ridge.joblib"
    weights.write_bytes(b"ridge weights")
    with ClearMLTracker({"clearml": {"project": "upload-test"}}, stage="train", settings=settings) as tracker:
        model_id = tracker.register_model(weights, "upload-ridge", metadata={"val_rmse": 3.9, "n_features": 13})
    assert not tracker.offline
    model = api.models[model_id]
    assert stored_weights(servers, model["uri"]) == b"ridge weights"
    assert model["metadata"]["val_rmse"] == {"key": "val_rmse", "type": "float", "value": "3.9"}
    assert model["metadata"]["n_features"] == {"key": "n_features", "type": "int", "value": "13"}


def test_registry_uploads_and_load_model_downloads_after_the_file_is_gone(servers, tmp_path):
    api, _ = servers
    settings = online_settings(tmp_path / "checkout", servers)
    weights = tmp_path / "forest.joblib"
    weights.write_bytes(b"forest weights")
    model_id = register_model(weights, "upload-forest", "upload-test", metadata={"trees": 100}, settings=settings)
    assert stored_weights(servers, api.models[model_id]["uri"]) == b"forest weights"

    weights.unlink()
    local_copy = load_model("upload-forest", project_name="upload-test", settings=settings)
    assert local_copy.read_bytes() == b"forest weights"


def test_weights_go_to_the_configured_destination(servers, tmp_path):
    api, files = servers
    destination = f"{files.url}/team-models"
    settings = online_settings(tmp_path / "checkout", servers, clearml_default_output_uri=destination)
    weights = tmp_path / "linear.joblib"
    weights.write_bytes(b"linear weights")
    model_id = register_model(weights, "upload-linear", "upload-test", settings=settings)
    assert api.models[model_id]["uri"].startswith(destination + "/")
    assert stored_weights(servers, api.models[model_id]["uri"]) == b"linear weights"


def test_a_refused_upload_fails_the_registration_naming_the_destination(servers, tmp_path):
    _, files = servers
    settings = online_settings(tmp_path / "checkout", servers)
    weights = tmp_path / "lasso.joblib"
    weights.write_bytes(b"lasso weights")
    files.refuse_uploads = 100
    try:
        with pytest.raises(ClearMLUploadError, match=rf"to {settings.clearml_files_url} failed: .*\(500\): disk full"):
            register_model(weights, "upload-lasso", "upload-test", settings=settings)
    finally:
        files.refuse_uploads = 0

"""Helpers shared by the ClearML tests (imported by name: tests/clearml is on sys.path)."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from fake_apiserver import SDK_KEY, SDK_SECRET

from mlstack.tracking import ClientSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_settings(root: Path, **values) -> ClientSettings:
    """The library's settings for a scratch checkout at `root`; no ClearML credentials unless given."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".env.example").touch()
    values.setdefault("clearml_api_access_key", None)
    values.setdefault("clearml_api_secret_key", None)
    return ClientSettings(MLSTACK_PROJECT_DIR=root, MLSTACK_STATE_DIR=root / "state", _env_file=None, **values)


def online_settings(root: Path, servers, **values) -> ClientSettings:
    """Settings for a checkout at `root` that reach the stand-in apiserver and fileserver `servers`
    with the SDK credentials they accept."""
    api, files = servers
    return make_settings(
        root,
        clearml_api_port=urlparse(api.url).port,
        clearml_files_port=urlparse(files.url).port,
        clearml_api_access_key=SDK_KEY,
        clearml_api_secret_key=SDK_SECRET,
        **values,
    )

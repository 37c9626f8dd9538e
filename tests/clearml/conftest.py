"""Fixtures for the ClearML tests: an SDK environment isolated in tmp folders."""

from __future__ import annotations

import pytest

SDK_VARIABLES = (
    "CLEARML_API_HOST",
    "CLEARML_WEB_HOST",
    "CLEARML_FILES_HOST",
    "CLEARML_API_ACCESS_KEY",
    "CLEARML_API_SECRET_KEY",
    "CLEARML_CONFIG_FILE",
    "CLEARML_OFFLINE_MODE",
)


@pytest.fixture(scope="module")
def isolated_sdk(tmp_path_factory):
    """HOME and CLEARML_CACHE_DIR in a tmp folder for the whole module (the SDK reads both)."""
    root = tmp_path_factory.mktemp("clearml-sdk")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(root / "home"))
        patch.setenv("CLEARML_CACHE_DIR", str(root / "cache"))
        for name in SDK_VARIABLES:
            patch.delenv(name, raising=False)
        yield root

"""Choosing a runtime: auto means docker when an engine answers, native otherwise."""

from __future__ import annotations

import pytest
from rich.console import Console

from mlstack.errors import RuntimeUnavailableError
from mlstack.runtime import resolve_runtime_name, select_runtime
from mlstack.runtime.native.runtime import NativeRuntime


@pytest.mark.parametrize(
    ("requested", "engine", "expected"),
    [("auto", True, "docker"), ("auto", False, "native"), ("native", True, "native"), ("docker", False, "docker")],
)
def test_resolve_runtime_name(requested, engine, expected):
    assert resolve_runtime_name(requested, engine=engine) == expected


def test_docker_without_an_engine_is_a_clear_error(project, monkeypatch):
    monkeypatch.setattr("mlstack.runtime.engine_answers", lambda: False)
    with pytest.raises(RuntimeUnavailableError, match="--runtime native"):
        select_runtime(project, Console(), "docker")


def test_auto_without_an_engine_selects_native(project, monkeypatch):
    monkeypatch.setattr("mlstack.runtime.engine_answers", lambda: False)
    assert isinstance(select_runtime(project, Console(), "auto"), NativeRuntime)

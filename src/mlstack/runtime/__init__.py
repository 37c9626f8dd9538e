"""Stack runtimes behind one interface: `docker` (compose) and `native` (local processes)."""

from __future__ import annotations

from rich.console import Console

from mlstack.errors import RuntimeUnavailableError
from mlstack.runtime.base import Runtime, ServiceStatus
from mlstack.runtime.docker import DockerRuntime, engine_answers
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import RuntimeName, Settings


def resolve_runtime_name(requested: RuntimeName, engine: bool | None = None) -> str:
    """auto means docker when an engine answers, native otherwise."""
    if requested != "auto":
        return requested
    return "docker" if (engine if engine is not None else engine_answers()) else "native"


def select_runtime(settings: Settings, console: Console, requested: RuntimeName | None = None) -> Runtime:
    name = resolve_runtime_name(requested or settings.runtime)
    if name == "docker":
        if not engine_answers():
            raise RuntimeUnavailableError(
                "--runtime docker was asked for but no Docker engine answers: start Docker, or use --runtime native."
            )
        return DockerRuntime(settings, console)
    return NativeRuntime(settings, console)


__all__ = ["Runtime", "ServiceStatus", "resolve_runtime_name", "select_runtime"]

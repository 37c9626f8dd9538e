"""Stack runtimes behind one interface: `docker` (compose) and `native` (local processes)."""

from __future__ import annotations

from typing import Literal

from rich.console import Console

from mlstack.errors import RuntimeUnavailableError
from mlstack.runtime.base import Runtime, ServiceStatus
from mlstack.runtime.docker import DockerRuntime, engine_answers
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import RuntimeName, Settings, StackName


def resolve_runtime_name(requested: RuntimeName, engine: bool | None = None) -> str:
    """auto means docker when an engine answers, native otherwise."""
    if requested != "auto":
        return requested
    return "docker" if (engine if engine is not None else engine_answers()) else "native"


def clearml_server_elsewhere(settings: Settings) -> str | None:
    """Why no ClearML server runs here when CLEARML_API_HOST names one this project does not run; else None."""
    if not settings.clearml_server_is_external:
        return None
    return (
        f"the ClearML server at {settings.clearml_api_url} (CLEARML_API_HOST) is not run by this project: "
        "nothing of it runs here to start, stop or back up; `mlstack status --stack clearml` checks it"
    )


def select_runtime(
    settings: Settings, console: Console, requested: RuntimeName | None = None, stack: StackName = "mlflow"
) -> Runtime:
    """The runtime for one stack. The ClearML server (MongoDB, Elasticsearch) runs under docker only, and
    not at all when CLEARML_API_HOST names a server elsewhere."""
    if stack == "clearml" and (elsewhere := clearml_server_elsewhere(settings)):
        raise RuntimeUnavailableError(elsewhere)
    name = resolve_runtime_name(requested or settings.runtime)
    if name == "docker":
        if not engine_answers():
            raise RuntimeUnavailableError(
                "--runtime docker was asked for but no Docker engine answers: start Docker, or use --runtime native."
            )
        return DockerRuntime(settings, console, stack)
    if stack == "clearml":
        raise RuntimeUnavailableError(
            "The ClearML server needs MongoDB and Elasticsearch, which only the docker runtime provides: "
            "start Docker (then `make up STACK=clearml`), or use STACK=mlflow."
        )
    return NativeRuntime(settings, console)


def select_runtimes(
    settings: Settings, console: Console, requested: RuntimeName | None, stack: StackName | Literal["all"]
) -> list[Runtime]:
    """One runtime per stack; with `all`, stacks this machine cannot run are named and passed over."""
    if stack != "all":
        return [select_runtime(settings, console, requested, stack)]
    runtimes = []
    for one in ("mlflow", "clearml"):
        try:
            runtimes.append(select_runtime(settings, console, requested, one))
        except RuntimeUnavailableError as unavailable:
            if one == "mlflow":
                raise
            console.print(f"[yellow]skipping the {one} stack:[/] {unavailable}")
    return runtimes


__all__ = [
    "Runtime",
    "ServiceStatus",
    "clearml_server_elsewhere",
    "resolve_runtime_name",
    "select_runtime",
    "select_runtimes",
]

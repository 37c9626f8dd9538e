"""The runtime interface: every stack runs behind the same verbs, whatever runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Protocol

from mlstack.settings import Settings


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    healthy: bool
    url: str
    detail: str = ""


class Runtime(Protocol):
    """Brings a stack up and down and reports on it. `up` is a no-op (returning False) when healthy."""

    name: str
    stack: str

    def up(self) -> bool: ...

    def down(self) -> None: ...

    def status(self) -> list[ServiceStatus]: ...


class MlflowStackRuntime(Runtime, Protocol):
    """What backup, restore and upgrade need of the MLflow stack's runtime: its server stopped and
    started, the schema migrated, a command run against a service as its administrator."""

    settings: Settings

    def stop_server(self) -> None: ...

    def start_server(self, migrate: bool = True) -> None: ...

    def migrate(self) -> None: ...

    def exec(
        self, service: str, command: list[str], stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None
    ) -> str: ...

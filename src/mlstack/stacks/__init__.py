"""What each stack is made of, defined once: its services, their images, the order they start in
and what each waits for, the ports they publish, how each is judged healthy, where their data
lives and which ones are one-shot steps.

The native runtime starts and stops the services in this order; the compose files in infra/ are
written by hand (they document every setting for people who run them without mlstack) and a
test checks them against this definition field by field (tests/compose/test_stack_definitions.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Port:
    """A published port: the .env variable of the host port and the port inside the container."""

    variable: str
    container: int


@dataclass(frozen=True)
class Service:
    name: str
    #: The pinned image (never `latest`); the native runtime runs the same version from packages.
    image: str
    #: Started once these are healthy (a one-shot among them: once it completed successfully).
    waits_for: tuple[str, ...] = ()
    ports: tuple[Port, ...] = ()
    #: What its health check asks: an HTTP path (of its own port) or URL, or the probe program's name.
    health: str | None = None
    #: Named volumes it keeps its data in (native: a folder of the same name under the state folder).
    data: tuple[str, ...] = ()
    #: A step that runs to completion (bootstrap, migration) instead of a long-running service.
    one_shot: bool = False
    #: Started only when asked for (e.g. `tls` with MLFLOW_TLS=true).
    profile: str | None = None


@dataclass(frozen=True)
class Stack:
    name: str
    services: tuple[Service, ...]

    def __post_init__(self) -> None:
        names = [service.name for service in self.services]
        for service in self.services:
            unknown = set(service.waits_for) - set(names[: names.index(service.name)])
            if unknown:
                raise ValueError(f"{self.name}: {service.name} waits for {sorted(unknown)}, not defined before it")

    def __getitem__(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)

    def start_order(self, profiles: tuple[str, ...] = ()) -> list[Service]:
        """Every service to start, each after what it waits for (the definition's order is one)."""
        return [service for service in self.services if service.profile is None or service.profile in profiles]

    def long_running(self, profiles: tuple[str, ...] = ()) -> list[Service]:
        """The services that keep running (what status reports and down stops), in start order."""
        return [service for service in self.start_order(profiles) if not service.one_shot]

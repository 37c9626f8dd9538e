"""The bootstrap step contract: small, ordered, idempotent steps that report what they did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import psycopg
import requests
import urllib3.exceptions
from botocore.exceptions import BotoCoreError

from mlstack.errors import StackNotReadyError
from mlstack.settings import Settings

#: What a step raises when the service it talks to goes away mid-run (S3, MinIO admin, HTTP, Postgres).
_UNREACHABLE = (
    BotoCoreError,
    urllib3.exceptions.HTTPError,
    requests.ConnectionError,
    requests.Timeout,
    psycopg.OperationalError,
)


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    PRESENT = "already present"


@dataclass(frozen=True)
class StepResult:
    step: str
    outcome: Outcome
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """One bootstrap action. `run` acts only when its effect is missing and says which it was."""

    name: str
    run: Callable[[Settings], StepResult]


def run_steps(steps: Iterable[Step], settings: Settings, report: Callable[[StepResult], None]) -> list[StepResult]:
    """Run `steps` in order, reporting each result as it lands; the first failure stops the run."""
    results = []
    for step in steps:
        try:
            result = step.run(settings)
        except _UNREACHABLE as error:
            raise StackNotReadyError(
                f"bootstrap step {step.name!r} failed: a service stopped answering ({error}). "
                "Check `mlstack status`, start what is down with `make up`, then run `mlstack bootstrap` again."
            ) from error
        report(result)
        results.append(result)
    return results

"""The bootstrap step contract: small, ordered, idempotent steps that report what they did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

import psycopg
import requests
import urllib3.exceptions
from botocore.exceptions import BotoCoreError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from mlstack.errors import ConfigError, StackNotReadyError
from mlstack.settings import Settings

#: What a step raises when the service it talks to goes away mid-run (S3, HTTP, Postgres).
_UNREACHABLE = (
    BotoCoreError,
    urllib3.exceptions.HTTPError,
    requests.ConnectionError,
    requests.Timeout,
    psycopg.OperationalError,
)


#: PostgreSQL refusing who we are, not a server still starting: waiting would not help.
_REFUSALS = ("password authentication failed", "no pg_hba.conf entry", "does not exist")


def _not_answering_yet(error: BaseException) -> bool:
    """The service is not there yet (refused, starting up, name not resolving), as opposed to a refusal."""
    return isinstance(error, _UNREACHABLE) and not any(refusal in str(error) for refusal in _REFUSALS)


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


def run_steps(
    steps: Iterable[Step],
    settings: Settings,
    report: Callable[[StepResult], None],
    wait: float = 0.0,
    waiting: Callable[[str], None] = lambda message: None,
) -> list[StepResult]:
    """Run `steps` in order, reporting each result as it lands; the first failure stops the run.

    With `wait`, a step whose service does not answer yet is tried again (steps are idempotent) for up
    to `wait` seconds, `waiting` told once per step; a refused login fails at once."""
    results = []
    for step in steps:
        try:
            result = _run_within(step, settings, wait, waiting)
        except _UNREACHABLE as error:
            if not _not_answering_yet(error):
                raise ConfigError(
                    f"bootstrap step {step.name!r} failed: the service refused it ({error}). The stack's "
                    "credentials are in .env: are they the ones the running stack was started with?"
                ) from error
            what = f"did not answer within {wait:.0f} s" if wait else "stopped answering"
            raise StackNotReadyError(
                f"bootstrap step {step.name!r} failed: a service {what} ({error}). "
                "Check `mlstack status`, start what is down with `make up`, then run `mlstack bootstrap` again."
            ) from error
        report(result)
        results.append(result)
    return results


def _run_within(step: Step, settings: Settings, wait: float, waiting: Callable[[str], None]) -> StepResult:
    told = False

    def tell(state) -> None:
        nonlocal told
        if not told:
            waiting(f"{step.name}: waiting up to {wait:.0f} s for the service ({state.outcome.exception()})")
            told = True

    retrying = Retrying(
        stop=stop_after_delay(wait),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_exception(_not_answering_yet),
        before_sleep=tell,
        reraise=True,
    )
    return retrying(step.run, settings)

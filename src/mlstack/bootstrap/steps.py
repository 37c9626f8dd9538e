"""The bootstrap step contract: small, ordered, idempotent steps that report what they did."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from mlstack.settings import Settings


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
        result = step.run(settings)
        report(result)
        results.append(result)
    return results

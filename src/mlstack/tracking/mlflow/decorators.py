"""Decorators: `mlflow_run` opens a run around a call; the others log into the active run.

They keep the wrapped function's signature, return value and method binding, and compose:
put `@mlflow_run(...)` outermost. The logging decorators check for an active run before the
function runs, so a missing run fails fast instead of after the work is done.
"""

from __future__ import annotations

import functools
import inspect
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mlstack.tracking.mlflow.tracker import ExperimentTracker

P = ParamSpec("P")
R = TypeVar("R")
_SCALARS = (str, bool, int, float, type(None))


def mlflow_run(
    experiment_name: str | None = None, run_name: str | None = None, tags: dict[str, Any] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the function inside a new run (a child run if one is open); logs `duration_seconds`."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with ExperimentTracker(experiment_name, run_name or function.__qualname__, tags) as tracker:
                started = time.perf_counter()
                result = function(*args, **kwargs)
                tracker.log_metric("duration_seconds", time.perf_counter() - started)
                return result

        return wrapper

    return decorate


def log_params_decorator(function: Callable[P, R] | None = None, *, prefix: str = ""):
    """Log the call's arguments, defaults included, as params (`self`/`cls` skipped).

    Scalars are logged as they are; other values (arrays, frames, models) as `<TypeName>`.
    Usable bare (`@log_params_decorator`) or with options (`@log_params_decorator(prefix="train.")`).
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            tracker = ExperimentTracker.for_active_run()
            tracker.log_params(
                {
                    f"{prefix}{name}": _param_text(value)
                    for name, value in _call_arguments(signature, args, kwargs).items()
                }
            )
            return function(*args, **kwargs)

        return wrapper

    return decorate(function) if function is not None else decorate


def log_metrics_decorator(keys: Iterable[str]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Log `keys` of the dict the function returns as metrics; missing keys are warned about."""
    keys = list(keys)

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            tracker = ExperimentTracker.for_active_run()
            result = function(*args, **kwargs)
            if not isinstance(result, dict):
                raise TypeError(
                    f"@log_metrics_decorator: {function.__qualname__} must return a dict of metrics, "
                    f"got {type(result).__name__}"
                )
            missing = [key for key in keys if key not in result]
            if missing:
                warnings.warn(
                    f"{function.__qualname__} returned no {missing}; those metrics were not logged", stacklevel=2
                )
            tracker.log_metrics({key: result[key] for key in keys if key in result})
            return result

        return wrapper

    return decorate


def log_artifact_decorator(artifact_path: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Log the file (or each file of a list) whose path the function returns, under `artifact_path`."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            tracker = ExperimentTracker.for_active_run()
            result = function(*args, **kwargs)
            paths = result if isinstance(result, list | tuple) else [result]
            for path in paths:
                if not isinstance(path, str | Path):
                    raise TypeError(
                        f"@log_artifact_decorator: {function.__qualname__} must return a path, "
                        f"got {type(path).__name__}"
                    )
                tracker.log_artifact(path, artifact_path)
            return result

        return wrapper

    return decorate


def timed_execution(function: Callable[P, R]) -> Callable[P, R]:
    """Log the call's wall time as metric `<function name>_duration_seconds` (also when it raises)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        tracker = ExperimentTracker.for_active_run()
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            tracker.log_metric(f"{function.__name__}_duration_seconds", time.perf_counter() - started)

    return wrapper


def _call_arguments(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    values: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if name in ("self", "cls") and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            values.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            values.update({f"{name}[{index}]": item for index, item in enumerate(value)})
        else:
            values[name] = value
    return values


def _param_text(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple) and len(value) <= 100 and all(isinstance(item, _SCALARS) for item in value):
        return list(value)
    return f"<{type(value).__name__}>"

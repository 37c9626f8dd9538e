"""The input checks of every tracker, run where the user logs, so bad input fails at the call site (not
in a background thread) and the same input is refused whichever backend gets it.

Limits are the MLflow tracking server's (mlflow.utils.validation), kept for ClearML too so that one
name or value works in both: keys <= 250 characters made of letters, digits and `_ - . / : space`,
param values <= 6000 characters, tag values <= 8000, metric values finite, steps non-negative
integers, and a param keeps its first value for the whole run.

Each check raises `error` (default TrackingInputError): the ClearML tracker passes ClearMLConfigError,
a subclass, which its callers have always caught.
"""

from __future__ import annotations

import json
import math
import numbers
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from mlstack.tracking.errors import ParamConflictError, TrackingInputError

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
_VALID_KEY = re.compile(r"^[/\w.\- :]+$")
_PARAM_SCALARS = (str, bool, int, float, type(None))

InputError = type[TrackingInputError]


def check_name(kind: str, name: Any, error: InputError = TrackingInputError) -> str:
    """`name` if it is a non-empty string (a stage, a series, a section: free text)."""
    if not isinstance(name, str) or not name.strip():
        raise error(f"{kind} must be a non-empty string, got {name!r}")
    return name


def check_key(kind: str, key: Any, error: InputError = TrackingInputError) -> str:
    """Return `key` if the server accepts it as a metric/param/tag name, else raise `error`."""
    if not isinstance(key, str) or not key:
        raise error(f"{kind} name must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise error(f"{kind} name {key[:40]!r}... is {len(key)} characters; the server allows {MAX_KEY_LENGTH}")
    if not _VALID_KEY.match(key):
        raise error(
            f"{kind} name {key!r} has characters the server refuses: use letters, digits, "
            "underscores, dashes, periods, spaces, colons and slashes"
        )
    normalized = posixpath.normpath(key)
    if normalized != key or normalized.startswith(("..", "/")):
        raise error(f"{kind} name {key!r} is not a clean relative path; use {normalized!r}")
    return key


def metric_value(key: str, value: Any, error: InputError = TrackingInputError) -> float:
    """`value` as a finite float; NaN, inf and non-numbers are refused (the server would mangle them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (hasattr(value, "item") and getattr(value, "size", 1) == 1):
            raise error(
                f"metric {key!r} has value {value!r}, which is not a finite number: log a float or int "
                f"(got a {type(value).__name__})"
            )
        value = value.item()
    number = float(value)
    if not math.isfinite(number):
        raise error(
            f"metric {key!r} has value {number}, which is not a finite number: MLflow stores inf as +-1.8e308 "
            "and NaN without a value. Log a finite number (or skip the point and set a tag such as diverged=true)."
        )
    return number


def check_step(step: Any, name: str = "step", error: InputError = TrackingInputError) -> int:
    """`step` as an int; `name` is what the message calls it (the caller's argument)."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise error(f"{name} must be a non-negative integer, got {step!r}")
    return int(step)


def checked_metrics(metrics: Any, error: InputError = TrackingInputError) -> dict[str, float]:
    """Every name and value of `metrics` checked, the values as floats; nothing is logged when one is bad."""
    if not isinstance(metrics, Mapping):
        raise error(f"metrics must be a dict of name -> number, got {metrics!r:.80}")
    return {check_key("metric", key, error): metric_value(key, value, error) for key, value in metrics.items()}


def param_value(key: str, value: Any, error: InputError = TrackingInputError) -> str:
    """The string the server stores for a param; refuses values without a stable text form."""
    if isinstance(value, _PARAM_SCALARS):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=_refuse)
        except (TypeError, ValueError) as problem:
            raise error(
                f"param {key!r} has a {type(value).__name__} value that cannot be written as text "
                f"({problem}); log a str, number, bool, or a JSON-serialisable list/dict"
            ) from None
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        raise error(
            f"param {key!r} is {len(text)} characters; the server allows {MAX_PARAM_VALUE_LENGTH}. "
            "Log long values as an artifact (log_dict / log_text) instead."
        )
    return text


def new_params(
    params: Mapping[str, Any], logged: Mapping[str, str], run: str | None, error: InputError = TrackingInputError
) -> dict[str, str]:
    """`params` not logged before, as the text the server stores; a key whose value changes (from
    `logged`, the run's params so far, or within `params`) raises ParamConflictError."""
    new: dict[str, str] = {}
    for key, value in params.items():
        text = param_value(check_key("param", key, error), value, error)
        previous = logged.get(key, new.get(key))
        if previous is not None and previous != text:
            raise ParamConflictError(
                f"param {key!r} is already {previous!r} in run {run}; params cannot change (MLflow's rule, "
                f"kept in every backend; got {text!r}). Log it under another name or as a metric/tag."
            )
        if previous is None:
            new[key] = text
    return new


def tag_value(key: str, value: Any, error: InputError = TrackingInputError) -> str:
    text = value if isinstance(value, str) else param_value(key, value, error)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise error(f"tag {key!r} is {len(text)} characters; the server allows {MAX_TAG_VALUE_LENGTH}")
    return text


def checked_tags(tags: Mapping[str, Any], error: InputError = TrackingInputError) -> dict[str, str]:
    """Every tag checked, as the text the server stores."""
    return {check_key("tag", key, error): tag_value(key, value, error) for key, value in tags.items()}


def _refuse(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

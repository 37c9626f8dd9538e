"""Checks run where the user logs, so bad input fails at the call site, not in a background thread.

Limits are the tracking server's (mlflow.utils.validation): keys <= 250 characters made of
letters, digits and `_ - . / : space`, param values <= 6000 characters, tag values <= 8000.
"""

from __future__ import annotations

import json
import math
import numbers
import posixpath
import re
from typing import Any

from mlstack.tracking.mlflow.errors import TrackingInputError

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
_VALID_KEY = re.compile(r"^[/\w.\- :]+$")
_PARAM_SCALARS = (str, bool, int, float, type(None))


def check_key(kind: str, key: Any) -> str:
    """Return `key` if the server accepts it as a metric/param/tag name, else raise TrackingInputError."""
    if not isinstance(key, str) or not key:
        raise TrackingInputError(f"{kind} name must be a non-empty string, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise TrackingInputError(
            f"{kind} name {key[:40]!r}... is {len(key)} characters; the server allows {MAX_KEY_LENGTH}"
        )
    if not _VALID_KEY.match(key):
        raise TrackingInputError(
            f"{kind} name {key!r} has characters the server refuses: use letters, digits, "
            "underscores, dashes, periods, spaces, colons and slashes"
        )
    normalized = posixpath.normpath(key)
    if normalized != key or normalized.startswith(("..", "/")):
        raise TrackingInputError(f"{kind} name {key!r} is not a clean relative path; use {normalized!r}")
    return key


def metric_value(key: str, value: Any) -> float:
    """`value` as a finite float; NaN, inf and non-numbers are refused (the server would mangle them)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if not (hasattr(value, "item") and getattr(value, "size", 1) == 1):
            raise TrackingInputError(f"metric {key!r} must be a real number, got {type(value).__name__}: {value!r}")
        value = value.item()
    number = float(value)
    if not math.isfinite(number):
        raise TrackingInputError(
            f"metric {key!r} is {number}: the server stores inf as +-1.8e308 and NaN without a value. "
            "Log a finite number (or skip the point and set a tag such as diverged=true)."
        )
    return number


def check_step(key: str, step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TrackingInputError(f"step of metric {key!r} must be an integer, got {step!r}")
    return int(step)


def param_value(key: str, value: Any) -> str:
    """The string the server stores for a param; refuses values without a stable text form."""
    if isinstance(value, _PARAM_SCALARS):
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=_refuse)
        except (TypeError, ValueError) as error:
            raise TrackingInputError(
                f"param {key!r} has a {type(value).__name__} value that cannot be written as text "
                f"({error}); log a str, number, bool, or a JSON-serialisable list/dict"
            ) from None
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        raise TrackingInputError(
            f"param {key!r} is {len(text)} characters; the server allows {MAX_PARAM_VALUE_LENGTH}. "
            "Log long values as an artifact (log_dict / log_text) instead."
        )
    return text


def tag_value(key: str, value: Any) -> str:
    text = value if isinstance(value, str) else param_value(key, value)
    if len(text) > MAX_TAG_VALUE_LENGTH:
        raise TrackingInputError(f"tag {key!r} is {len(text)} characters; the server allows {MAX_TAG_VALUE_LENGTH}")
    return text


def _refuse(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

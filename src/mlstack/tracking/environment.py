"""The one place the tracking library touches `os.environ`: what MLflow and the ClearML SDK read only
from the process environment. Everything else the library is told through `ClientSettings` and the
SDKs' own calls.

- MLflow reads the login of every request from MLFLOW_TRACKING_USERNAME / _PASSWORD (and sets
  MLFLOW_TRACKING_URI itself in `mlflow.set_tracking_uri`).
- The ClearML SDK keeps offline sessions under CLEARML_CACHE_DIR, reads its offline switch from
  CLEARML_OFFLINE_MODE (and writes it in `Task.set_offline`), and leaves the id of a process's task
  in CLEARML_PROC_MASTER_ID for its child processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The ClearML SDK's switch for offline mode, and the values it takes as on.
CLEARML_OFFLINE_MODE = "CLEARML_OFFLINE_MODE"
_ON = {"1", "true", "yes", "y", "on"}
#: Set by the ClearML SDK in a process that ran a task ("<pid>:<task id>"); Task.init in a process that
#: inherited it from another hands out a stand-in that records nothing.
_MASTER_IDS = ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID")


def use_mlflow_login(username: str, password: str) -> None:
    """The login of every MLflow request this process (and its children) makes."""
    os.environ["MLFLOW_TRACKING_USERNAME"] = username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


def clearml_offline_requested() -> bool:
    """Whether the user turned the ClearML SDK's offline mode on."""
    return os.environ.get(CLEARML_OFFLINE_MODE, "").strip().lower() in _ON


@contextmanager
def clearml_offline_mode_kept() -> Iterator[None]:
    """CLEARML_OFFLINE_MODE as it was before the block (`Task.set_offline` writes it, and this process
    and its children would then read it as the user asking for offline mode)."""
    before = os.environ.get(CLEARML_OFFLINE_MODE)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CLEARML_OFFLINE_MODE, None)
        else:
            os.environ[CLEARML_OFFLINE_MODE] = before


def use_clearml_cache(folder: Path) -> None:
    """Where the ClearML SDK stores offline sessions (`<folder>/offline`)."""
    os.environ["CLEARML_CACHE_DIR"] = str(folder)


def forget_inherited_master() -> None:
    """Task.init in this process makes a task of its own: drop a master id another process left here
    (the SDK keeps it in os.environ after a task closes, and every child inherits it)."""
    for name in _MASTER_IDS:
        owner = os.environ.get(name, "").partition(":")[0]
        if owner and owner != str(os.getpid()):
            del os.environ[name]


def forget_closed_master() -> None:
    """After this process's task closed, leave no master id for its children to inherit."""
    for name in _MASTER_IDS:
        if os.environ.get(name, "").partition(":")[0] == str(os.getpid()):
            del os.environ[name]

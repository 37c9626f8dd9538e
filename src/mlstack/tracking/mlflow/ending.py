"""How a tracker ends its MLflow run: on the server, or (when the server does not answer) locally, with
the end kept in the spool for `mlstack sync`. A failure that comes with points already spooled is added
to that report as a note, so the caller hears of both."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlstack.tracking.errors import MetricsSpooledError, TrackingError
from mlstack.tracking.mlflow.spool import spool_run_end


def end_on_server(
    client: MlflowClient, tracking_uri: str, run_id: str, status: str, spooled: MetricsSpooledError | None
) -> None:
    """End the run on the server (through the fluent API when it is the active run)."""
    try:
        if (active := mlflow.active_run()) is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            client.set_terminated(run_id, status)
    except MlflowException as error:
        leave_fluent_run(run_id)
        ended = TrackingError(
            f"run {run_id} could not be ended {status} on {tracking_uri}: the server answered "
            f"{error.error_code}: {error.message} (deleted meanwhile?)"
        )
        if spooled is None:
            raise ended from error
        spooled.add_note(str(ended))


def end_locally(
    spool_folder: Path, tracking_uri: str, run_id: str, status: str, spooled: MetricsSpooledError | None
) -> None:
    """End the run here and keep its end (status, end time) in the spool; says so in a warning."""
    leave_fluent_run(run_id)
    try:
        path = spool_run_end(spool_folder, tracking_uri, run_id, status, int(time.time() * 1000))
    except OSError as disk:
        lost = TrackingError(
            f"The MLflow server at {tracking_uri} does not answer and the end of run {run_id} "
            f"({status}) could not be written to {spool_folder} ({disk.strerror or disk}): the run stays "
            "RUNNING on the server; end it there (or with MlflowClient.set_terminated) once it answers."
        )
        if spooled is None:
            raise lost from disk
        spooled.add_note(str(lost))
        return
    message = (
        f"The MLflow server at {tracking_uri} does not answer: run {run_id} ended {status} "
        f"locally and its end is kept in {path}; run `mlstack sync` when the server is back."
    )
    if spooled is not None:
        spooled.add_note(message)
    else:
        warnings.warn(message, stacklevel=3)


def leave_fluent_run(run_id: str) -> None:
    """What mlflow.end_run does (mlflow 3.17), minus telling the unreachable server."""
    from mlflow.environment_variables import MLFLOW_RUN_ID
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack.get()
    if stack and stack[-1].info.run_id == run_id:
        MLFLOW_RUN_ID.unset()
        stack.pop()
        fluent._last_active_run_id.set(run_id)

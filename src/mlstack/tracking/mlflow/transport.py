"""How batches of metric points reach the tracking store.

For an HTTP(S) tracking server the points go straight to the REST endpoint `runs/log-batch` as
plain JSON (no protobuf round trip, no hidden urllib3 retries: the caller retries with tenacity).
Any other store (local sqlite/file) goes through MlflowClient.log_batch.
"""

from __future__ import annotations

from typing import Protocol

import requests
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

Point = tuple[str, str, float, int, int]  # run_id, key, value, timestamp (ms), step

MAX_METRICS_PER_REQUEST = 1000  # server limit; 1000 points of <=250-char keys stay far below 1 MB
REQUEST_TIMEOUT_SECONDS = 60
TRANSIENT_HTTP_STATUS = {408, 425, 429, 500, 502, 503, 504}


class TransientSendError(Exception):
    """The store could not take the batch now (unreachable, overloaded, restarting): retry it."""


class RejectedBatchError(Exception):
    """The store refused the batch for good (e.g. the run was deleted): retrying cannot help."""


class MetricSender(Protocol):
    max_points: int

    def send(self, run_id: str, points: list[Point]) -> None:
        """Store `points` (all of run `run_id`) or raise TransientSendError / RejectedBatchError."""


class RestMetricSender:
    """POST runs/log-batch through mlflow's pooled keep-alive session (auth from MLFLOW_TRACKING_*)."""

    max_points = MAX_METRICS_PER_REQUEST

    def __init__(self, tracking_uri: str):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        self._creds = get_default_host_creds(tracking_uri)
        self._http_request = http_request

    def send(self, run_id: str, points: list[Point]) -> None:
        body = {
            "run_id": run_id,
            "metrics": [
                {"key": key, "value": value, "timestamp": timestamp, "step": step}
                for _, key, value, timestamp, step in points
            ],
        }
        from mlflow.exceptions import MlflowException

        try:
            response = self._http_request(
                self._creds,
                "/api/2.0/mlflow/runs/log-batch",
                "POST",
                json=body,
                max_retries=0,
                timeout=REQUEST_TIMEOUT_SECONDS,
                raise_on_status=False,
            )
        except (requests.RequestException, MlflowException) as error:
            # with raise_on_status=False, http_request raises only when no response came at all
            raise TransientSendError(f"{type(error).__name__}: {error}") from error
        if response.status_code == 200:
            return
        detail = _server_answer(response)
        if response.status_code == 401:  # fixable: the points wait (spooled at worst) for the right login
            raise TransientSendError(f"{detail} (check MLFLOW_TRACKING_USERNAME/PASSWORD in .env)")
        if response.status_code in TRANSIENT_HTTP_STATUS:
            raise TransientSendError(detail)
        raise RejectedBatchError(detail)


def _server_answer(response: requests.Response) -> str:
    """`HTTP 400 INVALID_PARAMETER_VALUE: <message>` from MLflow's JSON error body, else the body's start."""
    try:
        error = response.json()
        return f"HTTP {response.status_code} {error['error_code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"


class ClientMetricSender:
    """Local stores (sqlite, file): MlflowClient.log_batch; their errors are not transient."""

    max_points = MAX_METRICS_PER_REQUEST

    def __init__(self, tracking_uri: str):
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri)

    def send(self, run_id: str, points: list[Point]) -> None:
        from mlflow.entities import Metric

        try:
            self._client.log_batch(
                run_id, metrics=[Metric(key, value, timestamp, step) for _, key, value, timestamp, step in points]
            )
        except Exception as error:  # noqa: BLE001 - reported with the batch, never swallowed
            raise RejectedBatchError(f"{type(error).__name__}: {error}") from error


def sender_for(tracking_uri: str) -> MetricSender:
    if tracking_uri.startswith(("http://", "https://")):
        return RestMetricSender(tracking_uri)
    return ClientMetricSender(tracking_uri)


@retry(
    stop=stop_after_delay(10),
    wait=wait_fixed(1),
    retry=retry_if_result(lambda answered: not answered),
    retry_error_callback=lambda _state: False,
)
def server_answers(tracking_uri: str) -> bool:
    """Whether the tracking server answers within ~10 s (always True for local stores).

    Any answer counts (a 401 or 404 from a proxy in front is the mlflow client's business); a
    refused connection, a timeout or a gateway error (502-504: nothing behind the proxy) does not.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    try:
        return requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).status_code not in (502, 503, 504)
    except requests.RequestException:
        return False

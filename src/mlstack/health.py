"""Health probes and a deadline-bound wait that shows progress and names what it waited for."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import psycopg
import requests
import urllib3
from rich.console import Console

from mlstack.errors import ServiceStartError


def http_ok(url: str, timeout: float = 2.0, verify: bool = True) -> bool:
    """True when `url` answers 200 (`verify`: check an HTTPS certificate)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return requests.get(url, timeout=timeout, verify=verify).status_code == 200
    except requests.RequestException:
        return False


def s3_answers(endpoint: str, timeout: float = 2.0) -> bool:
    """True when the S3 endpoint answers below 500: SeaweedFS's /healthz answers 200 once its filer is
    up; another S3 answers it as a bucket (403 or 404), which still says the endpoint serves."""
    try:
        return requests.get(f"{endpoint.rstrip('/')}/healthz", timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def clearml_answers(api_url: str) -> bool:
    """True when the ClearML apiserver at `api_url` answers its ping."""
    return http_ok(f"{api_url}/debug.ping")


def postgres_ok(dsn: str) -> bool:
    """True when PostgreSQL accepts a password login with `dsn`."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def wait_until(
    what: str,
    probe: Callable[[], bool],
    timeout: float,
    console: Console,
    still_alive: Callable[[], bool] = lambda: True,
    logs: Callable[[], str] = lambda: "",
) -> None:
    """Poll `probe` until it passes; on timeout or early exit raise with the service's last log lines."""
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what} to become healthy"):
        while time.monotonic() < deadline:
            if probe():
                console.print(f"[green]✓[/] {what} is healthy")
                return
            if not still_alive():
                raise ServiceStartError(f"{what} exited before becoming healthy. Last log lines:\n{logs()}")
            time.sleep(0.25)
    raise ServiceStartError(f"{what} was not healthy after {timeout:.0f}s. Last log lines:\n{logs()}")

"""Health probes and a deadline-bound wait that shows progress and names what it waited for."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
import requests
import urllib3
from rich.console import Console

from mlstack.errors import ServiceStartError

if TYPE_CHECKING:
    from mlstack.bootstrap.clearml import ClearMLApi
    from mlstack.settings import Settings


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


@dataclass(frozen=True)
class Check:
    """One thing checked on a server: what, whether it passed, and what was found (or the fix)."""

    name: str
    passed: bool
    detail: str


def check_clearml_server(settings: Settings, timeout: float = 5.0) -> list[Check]:
    """A ClearML server this project does not run (CLEARML_API_HOST): its URLs are all set, it answers,
    the client credentials log in (the login tells its version), the agent's queue is there. A check
    that needs one that failed is left out."""
    from mlstack.bootstrap.clearml import ClearMLApi

    api = ClearMLApi(settings.clearml_api_url, timeout=timeout)
    checks = [_clearml_urls(settings), _clearml_reachable(api)]
    if not checks[-1].passed:
        return checks
    login, token = _clearml_login(api, settings)
    checks.append(login)
    if token is not None:
        checks.append(_clearml_queue(api, token, settings.clearml_default_queue))
    return checks


def _clearml_urls(settings: Settings) -> Check:
    from mlstack.bootstrap.clearml import missing_server_urls

    if missing := missing_server_urls(settings):
        return Check("URLs", False, f"{' and '.join(missing)} not set: set them in .env with CLEARML_API_HOST")
    urls = f"API {settings.clearml_api_url}, web UI {settings.clearml_web_url}, files {settings.clearml_files_url}"
    return Check("URLs", True, urls)


def _clearml_reachable(api: ClearMLApi) -> Check:
    try:
        answer = requests.get(f"{api.base_url}/debug.ping", timeout=api.timeout).status_code
    except requests.RequestException as error:
        return Check("reachable", False, f"nothing answers at {api.base_url} ({type(error).__name__})")
    if answer != 200:
        return Check("reachable", False, f"{api.base_url}/debug.ping answered HTTP {answer}, not 200")
    return Check("reachable", True, f"{api.base_url} answers")


def _clearml_login(api: ClearMLApi, settings: Settings) -> tuple[Check, str | None]:
    """The credentials' check, and their token when they log in."""
    from mlstack.bootstrap.clearml import CREATE_CREDENTIALS, ClearMLApiError, server_version
    from mlstack.secrets import mask

    key, secret = settings.clearml_api_access_key, settings.clearml_api_secret_key
    if not (key and secret):
        return Check("credentials", False, f"CLEARML_API_ACCESS_KEY / _SECRET_KEY not set: {CREATE_CREDENTIALS}"), None
    try:
        token = api.login(key, secret.get_secret_value())
    except ClearMLApiError as error:
        return Check("credentials", False, f"key {mask(key)} does not log in ({error}): {CREATE_CREDENTIALS}"), None
    return Check("credentials", True, f"key {mask(key)} logs in; ClearML server {server_version(token)}"), token


def _clearml_queue(api: ClearMLApi, token: str, queue: str) -> Check:
    from mlstack.bootstrap.clearml import ClearMLApiError

    name = f"queue {queue!r}"
    try:
        queue_id = api.find_queue(token, queue)
    except ClearMLApiError as error:
        return Check(name, False, str(error))
    if queue_id is None:
        fix = "`mlstack bootstrap --stack clearml` creates it (or the web UI's Workers & Queues page)"
        return Check(name, False, f"the server has no queue named {queue!r} (CLEARML_DEFAULT_QUEUE): {fix}")
    return Check(name, True, f"present (id {queue_id})")


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

"""ClearML bootstrap steps: client credentials for the fixed user, clearml.conf, the agent's queue.

Each step talks to the apiserver's JSON API (POST /<service>.<action>) and acts only when its
effect is missing: stored credentials that still log in are reused, never piled up.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.envfile import read_env, update_env, write_private
from mlstack.errors import MlstackError
from mlstack.settings import PACKAGED_CONF, Settings

CONF_TEMPLATE = PACKAGED_CONF / "clearml" / "clearml.conf.template"
_TRANSIENT = (requests.ConnectionError, requests.Timeout)


class ClearMLAuthError(MlstackError):
    """The apiserver refused the credentials (HTTP 401)."""


class ClearMLApiError(MlstackError):
    """The apiserver answered a call with an error."""


class ClearMLApi:
    """The few apiserver calls bootstrap needs, with retries while the server is starting."""

    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        wait=wait_exponential(multiplier=0.5, max=8),
        stop=stop_after_attempt(6),
        reraise=True,
    )
    def _post(self, endpoint: str, payload: dict, **auth) -> requests.Response:
        return self.http.post(f"{self.base_url}/{endpoint}", json=payload, timeout=self.timeout, **auth)

    def _data(self, endpoint: str, response: requests.Response) -> dict:
        if response.status_code == 401:
            raise ClearMLAuthError(f"{endpoint} at {self.base_url} refused the credentials (401)")
        if response.status_code != 200:
            message = response.text[:300]
            raise ClearMLApiError(f"{endpoint} at {self.base_url} failed with HTTP {response.status_code}: {message}")
        return response.json().get("data") or {}

    def login(self, user: str, secret: str) -> str:
        """A bearer token for a key/secret pair or a fixed user's name/password (HTTP Basic)."""
        response = self._post("auth.login", {}, auth=(user, secret))
        return self._data("auth.login", response)["token"]

    def call(self, endpoint: str, token: str, payload: dict | None = None) -> dict:
        response = self._post(endpoint, payload or {}, headers={"Authorization": f"Bearer {token}"})
        return self._data(endpoint, response)


def _fixed_user_token(api: ClearMLApi, settings: Settings) -> str:
    password = settings.clearml_fixed_user_password.get_secret_value()
    try:
        return api.login(settings.clearml_fixed_user, password)
    except ClearMLAuthError as exc:
        raise ClearMLAuthError(
            f"ClearML refused the fixed user {settings.clearml_fixed_user!r}: CLEARML_FIXED_USER_PASSWORD in "
            f"{settings.env_file} must match the one the apiserver started with (restart it after changing .env)"
        ) from exc


def _credentials_work(api: ClearMLApi, access_key: str, secret_key: str) -> bool:
    try:
        api.login(access_key, secret_key)
    except ClearMLAuthError:
        return False
    return True


def render_clearml_conf(settings: Settings, access_key: str, secret_key: str) -> str:
    """The client clearml.conf for these credentials, the stack's URLs and the output destination."""
    return Template(CONF_TEMPLATE.read_text(encoding="utf-8")).substitute(
        api_host=settings.clearml_api_url,
        web_host=settings.clearml_web_url,
        files_host=settings.clearml_files_url,
        output_uri=settings.clearml_output_destination,
        access_key=access_key,
        secret_key=secret_key,
    )


def clearml_conf_path(settings: Settings) -> Path:
    return settings.state_path / "clearml.conf"


def ensure_client_credentials(settings: Settings) -> StepResult:
    """Create API credentials for the fixed user unless the stored ones still log in.

    Writes CLEARML_* client variables to .env and a clearml.conf (0600) next to the state.
    """
    name = "clearml client credentials"
    api = ClearMLApi(settings.clearml_api_url)
    stored = read_env(settings.env_file)
    access_key, secret_key = stored.get("CLEARML_API_ACCESS_KEY", ""), stored.get("CLEARML_API_SECRET_KEY", "")
    if access_key and secret_key and _credentials_work(api, access_key, secret_key):
        outcome, detail = Outcome.PRESENT, f"key {access_key[:6]}… still logs in"
    else:
        token = _fixed_user_token(api, settings)
        credentials = api.call("auth.create_credentials", token)["credentials"]
        access_key, secret_key = credentials["access_key"], credentials["secret_key"]
        outcome, detail = Outcome.CREATED, f"key {access_key[:6]}… for user {settings.clearml_fixed_user}"
    conf_path = clearml_conf_path(settings)
    conf_text = render_clearml_conf(settings, access_key, secret_key)
    if not conf_path.exists() or conf_path.read_text(encoding="utf-8") != conf_text:
        write_private(conf_path, conf_text)
        outcome = Outcome.UPDATED if outcome is Outcome.PRESENT else outcome
    client_values = {
        "CLEARML_API_HOST": settings.clearml_api_url,
        "CLEARML_WEB_HOST": settings.clearml_web_url,
        "CLEARML_FILES_HOST": settings.clearml_files_url,
        "CLEARML_API_ACCESS_KEY": access_key,
        "CLEARML_API_SECRET_KEY": secret_key,
        "CLEARML_CONFIG_FILE": str(conf_path),
    }
    if any(stored.get(key) != value for key, value in client_values.items()):
        update_env(settings.env_file, client_values)
        outcome = Outcome.UPDATED if outcome is Outcome.PRESENT else outcome
    return StepResult(name, outcome, detail)


def ensure_default_queue(settings: Settings) -> StepResult:
    """Create the queue the agent serves (CLEARML_DEFAULT_QUEUE) unless it exists."""
    name = "clearml default queue"
    queue = settings.clearml_default_queue
    api = ClearMLApi(settings.clearml_api_url)
    token = _fixed_user_token(api, settings)
    existing = api.call("queues.get_all", token, {"name": f"^{queue}$"})["queues"]
    if any(found["name"] == queue for found in existing):
        return StepResult(name, Outcome.PRESENT, queue)
    queue_id = api.call("queues.create", token, {"name": queue})["id"]
    return StepResult(name, Outcome.CREATED, f"{queue} (id {queue_id})")


def clearml_steps() -> list[Step]:
    """The ClearML bootstrap, in order; run after the stack is healthy."""
    return [
        Step("clearml client credentials", ensure_client_credentials),
        Step("clearml default queue", ensure_default_queue),
    ]

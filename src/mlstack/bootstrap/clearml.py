"""ClearML bootstrap steps: client credentials, clearml.conf, the agent's queue.

Each step talks to the apiserver's JSON API (POST /<service>.<action>) and acts only when its
effect is missing: stored credentials that still log in are reused, never piled up. On a server this
project does not run (CLEARML_API_HOST names it) the steps use the credentials made on that server.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from string import Template

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.envfile import read_env, update_env, write_private
from mlstack.errors import MlstackError
from mlstack.secrets import mask
from mlstack.settings import PACKAGED_CONF, Settings

CONF_TEMPLATE = PACKAGED_CONF / "clearml" / "clearml.conf.template"
_TRANSIENT = (requests.ConnectionError, requests.Timeout)
#: How much of an answer that is not the apiserver's JSON (a proxy's HTML page, say) an error shows.
SHOWN_CHARACTERS = 160
#: Where a person makes credentials on a ClearML server (its web UI).
CREATE_CREDENTIALS = (
    "create credentials in its web UI (Settings > Workspace > Create new credentials) and set "
    "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY in .env"
)


class ClearMLApiError(MlstackError):
    """The apiserver answered a call with an error."""


class ClearMLAuthError(ClearMLApiError):
    """The apiserver refused the credentials (HTTP 401)."""


def first_line(text: str) -> str:
    """The first line of a body that is not the apiserver's JSON, cut at SHOWN_CHARACTERS (and saying so)."""
    lines = text.strip().splitlines()
    if not lines:
        return "(empty body)"
    line = lines[0].strip()
    if len(line) > SHOWN_CHARACTERS:
        return f"{line[:SHOWN_CHARACTERS]}… (first line, cut at {SHOWN_CHARACTERS} characters)"
    return line if len(lines) == 1 else f"{line} (first of {len(lines)} lines)"


def server_message(response: requests.Response) -> str:
    """What the apiserver said: its `meta.result_msg` with the subcode, else the body's first line."""
    try:
        meta = response.json()["meta"]
        message, subcode = meta["result_msg"], meta.get("result_subcode")
    except (ValueError, KeyError, TypeError):
        return first_line(response.text)
    return f"{message} (subcode {subcode})" if subcode else str(message)


def server_version(token: str) -> str:
    """The server's version and API level, as it writes them into its tokens (where the SDK reads them)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return "version unknown (the token is not a JWT)"
    return f"{claims.get('server_version') or 'version unknown'} (API {claims.get('api_version') or 'unknown'})"


class ClearMLApi:
    """The few apiserver calls bootstrap and status need, with retries while the server is starting."""

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
        """The call's `data`; anything else raises one line: the call, the HTTP status, the server's words."""
        failed = f"clearml: {endpoint} at {self.base_url} failed: {response.status_code}"
        if response.status_code != 200:
            error = ClearMLAuthError if response.status_code == 401 else ClearMLApiError
            raise error(f"{failed} {server_message(response)}")
        try:
            return response.json().get("data") or {}
        except (ValueError, AttributeError):
            raise ClearMLApiError(f"{failed} but not with ClearML's JSON: {first_line(response.text)}") from None

    def login(self, user: str, secret: str) -> str:
        """A bearer token for a key/secret pair or a fixed user's name/password (HTTP Basic)."""
        response = self._post("auth.login", {}, auth=(user, secret))
        return self._data("auth.login", response)["token"]

    def call(self, endpoint: str, token: str, payload: dict | None = None) -> dict:
        response = self._post(endpoint, payload or {}, headers={"Authorization": f"Bearer {token}"})
        return self._data(endpoint, response)

    def find_queue(self, token: str, name: str) -> str | None:
        """The id of the queue named exactly `name` (the server matches names as regexes), or None."""
        found = self.call("queues.get_all", token, {"name": f"^{re.escape(name)}$"})["queues"]
        return next((queue["id"] for queue in found if queue["name"] == name), None)


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


def missing_server_urls(settings: Settings) -> list[str]:
    """The variables a server this project does not run needs besides CLEARML_API_HOST and lacks."""
    if not settings.clearml_server_is_external:
        return []
    return [name for name in ("CLEARML_WEB_HOST", "CLEARML_FILES_HOST") if not getattr(settings, name.lower())]


def _external_token(api: ClearMLApi, settings: Settings) -> str:
    """A token of the credentials made on a server this project does not run (it knows no fixed user of ours)."""
    elsewhere = f"the ClearML server at {api.base_url} is not run by this project"
    if missing := missing_server_urls(settings):
        raise MlstackError(f"{elsewhere}: set {' and '.join(missing)} in .env as well (its web UI shows them)")
    key, secret = settings.clearml_api_access_key, settings.clearml_api_secret_key
    if not (key and secret):
        raise ClearMLAuthError(f"{elsewhere}, so bootstrap cannot make credentials there: {CREATE_CREDENTIALS}")
    try:
        return api.login(key, secret.get_secret_value())
    except ClearMLAuthError as exc:
        refused = f"{elsewhere} and refused CLEARML_API_ACCESS_KEY {mask(key)}"
        raise ClearMLAuthError(f"{refused}: {CREATE_CREDENTIALS}") from exc


def _client_credentials(api: ClearMLApi, settings: Settings, stored: dict[str, str]) -> tuple[str, str, StepResult]:
    """Credentials that log in, and whether they were there: the server's own (external), the stored ones
    while they still log in, else new ones of the fixed user."""
    name = "clearml client credentials"
    if settings.clearml_server_is_external:
        _external_token(api, settings)
        key, secret = settings.clearml_api_access_key, settings.clearml_api_secret_key.get_secret_value()
        return key, secret, StepResult(name, Outcome.PRESENT, f"key {mask(key)} logs in to {api.base_url}")
    key, secret = stored.get("CLEARML_API_ACCESS_KEY", ""), stored.get("CLEARML_API_SECRET_KEY", "")
    if key and secret and _credentials_work(api, key, secret):
        return key, secret, StepResult(name, Outcome.PRESENT, f"key {mask(key)} still logs in")
    credentials = api.call("auth.create_credentials", _fixed_user_token(api, settings))["credentials"]
    key, secret = credentials["access_key"], credentials["secret_key"]
    return key, secret, StepResult(name, Outcome.CREATED, f"key {mask(key)} for user {settings.clearml_fixed_user}")


def ensure_client_credentials(settings: Settings) -> StepResult:
    """Create API credentials for the fixed user unless the stored ones still log in (on a server this
    project does not run: check the ones made there).

    Writes CLEARML_* client variables to .env and a clearml.conf (0600) next to the state.
    """
    api = ClearMLApi(settings.clearml_api_url)
    stored = read_env(settings.env_file)
    access_key, secret_key, result = _client_credentials(api, settings, stored)
    changed = False
    conf_path = clearml_conf_path(settings)
    conf_text = render_clearml_conf(settings, access_key, secret_key)
    if not conf_path.exists() or conf_path.read_text(encoding="utf-8") != conf_text:
        write_private(conf_path, conf_text)
        changed = True
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
        changed = True
    if changed and result.outcome is Outcome.PRESENT:
        return StepResult(result.step, Outcome.UPDATED, result.detail)
    return result


def ensure_default_queue(settings: Settings) -> StepResult:
    """Create the queue named CLEARML_DEFAULT_QUEUE unless the server has it.

    The apiserver makes a queue named `default` when it starts and the agent makes the one it serves
    when it starts (`--create-queue`); this step has it there before either, so tasks can be enqueued
    (`pipeline run --where agent`) whatever the name and whether or not the agent runs yet."""
    name = "clearml default queue"
    queue = settings.clearml_default_queue
    api = ClearMLApi(settings.clearml_api_url)
    token = _external_token(api, settings) if settings.clearml_server_is_external else _fixed_user_token(api, settings)
    if queue_id := api.find_queue(token, queue):
        return StepResult(name, Outcome.PRESENT, f"queue {queue!r} (id {queue_id})")
    queue_id = api.call("queues.create", token, {"name": queue})["id"]
    return StepResult(name, Outcome.CREATED, f"queue {queue!r} (id {queue_id})")


def clearml_steps() -> list[Step]:
    """The ClearML bootstrap, in order; run after the stack is healthy."""
    return [
        Step("clearml client credentials", ensure_client_credentials),
        Step("clearml default queue", ensure_default_queue),
    ]

"""Choose between the ClearML server and offline mode, and point the SDK at the chosen one."""

from __future__ import annotations

import logging

import requests
from clearml import OutputModel, Task

from mlstack.client_settings import ClientSettings
from mlstack.tracking import environment
from mlstack.tracking.errors import ClearMLUnavailableError

log = logging.getLogger(__name__)
_announced_offline = False


def _set_offline(offline: bool) -> None:
    """The SDK's mode switch, without the mark it leaves in the environment (CLEARML_OFFLINE_MODE stays
    the user's own)."""
    with environment.clearml_offline_mode_kept():
        Task.set_offline(offline)


def server_problem(settings: ClientSettings, timeout: float = 3.0) -> str | None:
    """Why the configured ClearML server cannot be used, or None when it answers."""
    if environment.clearml_offline_requested():
        return f"{environment.CLEARML_OFFLINE_MODE} is set (the ClearML SDK's switch for offline mode)"
    if not (settings.clearml_api_access_key and settings.clearml_api_secret_key):
        return (
            "no ClearML credentials are configured (CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY, "
            "which `mlstack bootstrap` writes to .env)"
        )
    url = f"{settings.clearml_api_url}/debug.ping"
    try:
        requests.get(url, timeout=timeout).raise_for_status()
    except requests.RequestException as exc:
        return f"the ClearML server at {settings.clearml_api_url} does not answer ({type(exc).__name__})"
    return None


def report_in_process() -> None:
    """Have the SDK report from a thread of this process, not from the child it forks by default on Linux.

    The fork copies a process whose other threads (MLflow's flusher, the training loop's) may hold
    locks; the child can then start deadlocked, never read its pipe, and closing the task waits on it
    forever. `sdk.development.report_use_subprocess` has no environment variable, so this sets the
    value the SDK read from it."""
    Task._report_subprocess_enabled = False


def use_server(settings: ClientSettings) -> None:
    """Send SDK calls to the configured server with the bootstrap-created client credentials."""
    report_in_process()
    Task.set_credentials(
        api_host=settings.clearml_api_url,
        web_host=settings.clearml_web_url,
        files_host=settings.clearml_files_url,
        key=settings.clearml_api_access_key,
        secret=settings.clearml_api_secret_key.get_secret_value(),
    )
    # After the credentials: going online reconnects the sessions this process opened offline.
    _set_offline(False)


def use_offline(settings: ClientSettings, reason: str) -> None:
    """Store sessions under the state folder (CLEARML_CACHE_DIR) and say so once per process.

    Models registered offline record the output destination, where sync uploads their weights."""
    global _announced_offline
    report_in_process()
    settings.clearml_offline_path.mkdir(parents=True, exist_ok=True)
    environment.use_clearml_cache(settings.clearml_offline_path)
    _set_offline(True)
    OutputModel.set_default_upload_uri(settings.clearml_output_destination)
    if not _announced_offline:
        _announced_offline = True
        log.warning(
            "ClearML offline: %s. Sessions are stored in %s; run `mlstack clearml sync` once the server is up.",
            reason,
            settings.clearml_offline_path / "offline",
        )


def require_server(settings: ClientSettings) -> None:
    """Point the SDK at the server, or raise naming why it cannot be used and what to do."""
    problem = server_problem(settings)
    if problem:
        raise ClearMLUnavailableError(
            f"This needs a ClearML server, but {problem}: start it (`make up`) and run `mlstack bootstrap`."
        )
    use_server(settings)

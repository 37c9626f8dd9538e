"""`ClientSettings`: what the tracking library reads, from the environment and the project's `.env`.

The stack's `mlstack.settings.Settings` extends it with the servers' settings, so the stack's commands
hand theirs to the library as they are; the library never loads those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack.errors import ConfigError

#: A project folder has one of these: a checkout (.env.example) or a folder `mlstack init` set up (.env).
_PROJECT_MARKERS = (".env.example", ".env")


def is_project_dir(folder: Path) -> bool:
    """A checkout (it has .env.example) or a folder `mlstack init` made a project (it has .env)."""
    return any((folder / marker).is_file() for marker in _PROJECT_MARKERS)


def find_project_dir(start: Path | None = None) -> Path:
    """The nearest project folder at or above `start` (default: the current folder), else `start`."""
    start = (start or Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if is_project_dir(folder)), start)


class ClientSettings(BaseSettings):
    """The tracking server and login, the metric pipeline, the backends, the ClearML server and keys,
    and the state folder. Field names are the `.env` variable names, case-insensitive."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8")

    project_dir: Path = Field(default_factory=find_project_dir, alias="MLSTACK_PROJECT_DIR")
    state_dir: Path | None = Field(default=None, alias="MLSTACK_STATE_DIR")

    mlflow_tracking_uri: str | None = None
    mlflow_experiment_name: str = "mlstack"
    mlflow_tracking_username: str | None = None
    mlflow_tracking_password: SecretStr | None = None
    # the metric pipeline (non-blocking logging)
    metric_buffer_points: int = Field(default=200_000, gt=0, alias="MLSTACK_METRIC_BUFFER_POINTS")
    metric_flush_interval_seconds: float = Field(default=0.5, gt=0, alias="MLSTACK_METRIC_FLUSH_INTERVAL_SECONDS")
    metric_flusher_threads: int = Field(default=2, ge=1, alias="MLSTACK_METRIC_FLUSHER_THREADS")
    metric_outage_budget_seconds: float = Field(default=300.0, gt=0, alias="MLSTACK_METRIC_OUTAGE_BUDGET_SECONDS")
    #: Backends `track` logs to, comma-separated (mlflow, clearml); empty: both.
    trackers: str = Field(default="", alias="MLSTACK_TRACKERS")

    clearml_api_port: int = 8008
    clearml_web_port: int = 8080
    clearml_files_port: int = 8081
    #: Host name under which clients reach the ClearML server's published ports.
    clearml_host_ip: str = "127.0.0.1"
    #: The SDK's own variables. Naming another server than the stack's (a team's, the hosted one), they
    #: make it the server every command and the library use; the stack's own URLs (what bootstrap writes
    #: here) change nothing.
    clearml_api_host: str | None = None
    clearml_web_host: str | None = None
    clearml_files_host: str | None = None
    clearml_default_queue: str = "default"
    #: Client credentials written by `mlstack bootstrap`.
    clearml_api_access_key: str | None = None
    clearml_api_secret_key: SecretStr | None = None
    #: Where tracker sessions go when no server answers (default: <state dir>/clearml).
    clearml_offline_dir: Path | None = Field(default=None, alias="MLSTACK_CLEARML_OFFLINE_DIR")
    #: Project of ClearMLTracker runs whose config names none (no clearml.project).
    clearml_default_project: str = Field(default="mlstack", min_length=1)
    #: Where model weights go (any URI the ClearML SDK uploads to); default: the fileserver.
    clearml_default_output_uri: str | None = None

    @classmethod
    def load(cls, project_dir: Path | None = None) -> Self:
        """Read the settings of the project at `project_dir` (default: MLSTACK_PROJECT_DIR, else found from
        the current folder): its `.env`, overridden by the environment."""
        project_dir = (project_dir or Path(os.environ.get("MLSTACK_PROJECT_DIR") or find_project_dir())).resolve()
        try:
            return cls(_env_file=project_dir / ".env", MLSTACK_PROJECT_DIR=project_dir)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])).upper()}={e['input']!r}: {e['msg']}" for e in error.errors()
            )
            raise ConfigError(
                f"Invalid setting in {project_dir / '.env'} or the environment: {problems}. "
                "Fix the value (.env.example documents each setting)."
            ) from None

    @property
    def state_path(self) -> Path:
        return (self.state_dir or self.project_dir / ".mlstack").resolve()

    @property
    def clearml_server_is_external(self) -> bool:
        """CLEARML_API_HOST names a ClearML server this project does not run: anything but the stack's
        apiserver (http, CLEARML_API_PORT on CLEARML_HOST_IP or this host's loopback names)."""
        if not self.clearml_api_host:
            return False
        url = urlsplit(self.clearml_api_host)
        ours = {self.clearml_host_ip.lower(), "127.0.0.1", "localhost"}
        return not (url.scheme == "http" and url.hostname in ours and url.port == self.clearml_api_port)

    def _clearml_url(self, external: str | None, port: int) -> str:
        """An external server's URL as set, else the stack's published port on CLEARML_HOST_IP."""
        if self.clearml_server_is_external and external:
            return external.rstrip("/")
        return f"http://{self.clearml_host_ip}:{port}"

    @property
    def clearml_api_url(self) -> str:
        return self._clearml_url(self.clearml_api_host, self.clearml_api_port)

    @property
    def clearml_web_url(self) -> str:
        return self._clearml_url(self.clearml_web_host, self.clearml_web_port)

    @property
    def clearml_files_url(self) -> str:
        return self._clearml_url(self.clearml_files_host, self.clearml_files_port)

    @property
    def clearml_output_destination(self) -> str:
        """Where tasks upload model weights: CLEARML_DEFAULT_OUTPUT_URI, else the stack's fileserver."""
        return self.clearml_default_output_uri or self.clearml_files_url

    @property
    def clearml_offline_path(self) -> Path:
        """Offline ClearML sessions (the SDK's CLEARML_CACHE_DIR while no server answers)."""
        return (self.clearml_offline_dir or self.state_path / "clearml").resolve()

"""Errors a user can act on: each says what failed, the value, and what to do."""

from __future__ import annotations

from pathlib import Path


class MlstackError(Exception):
    """Base class: the message is shown to the user as it is, without a traceback."""


class PlaceholderSecretError(MlstackError):
    def __init__(self, problems: dict[str, str], env_file: Path):
        self.problems = problems
        listed = "; ".join(f"{name} is {why}" for name, why in sorted(problems.items()))
        super().__init__(
            f"Refusing to start: {listed} (in {env_file}). "
            "Run `mlstack init` (or `make up`) to generate strong secrets, or set them in .env."
        )


class MissingToolError(MlstackError):
    """A binary the native runtime needs is not installed."""


class ServiceStartError(MlstackError):
    """A service did not become healthy in time; the message carries its last log lines."""


class RuntimeUnavailableError(MlstackError):
    """The requested runtime cannot run on this machine."""


class ConfigError(MlstackError):
    """A setting in .env (or the environment) has a value that cannot be used."""


class ProjectNotFoundError(MlstackError):
    """A stack command ran outside an mlstack project (a checkout, or a folder `mlstack init` set up)."""

    def __init__(self, folder: Path):
        super().__init__(
            f"no mlstack project at {folder} or above it (no .env.example or .env): cd into your mlstack checkout "
            f"or set MLSTACK_PROJECT_DIR to it; or run `mlstack init` to make {folder} a project (native runtime)."
        )


class StackNotReadyError(MlstackError):
    """A service that a command needs does not answer."""


class BackupError(MlstackError):
    """A backup, restore, upgrade or gc could not be done; nothing was left half-done (the message says)."""


class CommandError(MlstackError):
    """A command run where a service lives (`Runtime.exec`) failed; the message ends with its stderr."""

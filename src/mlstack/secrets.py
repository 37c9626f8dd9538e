"""Secret generation and validation: placeholders in `.env.example` become strong random values."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from pathlib import Path

from mlstack.envfile import read_env, update_env, write_private
from mlstack.errors import PlaceholderSecretError
from mlstack.settings import Settings, StackName

#: The value `.env.example` carries where a secret will be generated.
PLACEHOLDER = "__generate__"

#: Values that ship as defaults somewhere public; a stack never starts with one of them.
KNOWN_DEFAULTS = frozenset(
    {"minioadmin", "minio123", "password", "postgres", "mlflow", "admin", "changeme", "secret", "root"}
)
MIN_SECRET_LENGTH = 16
_ALPHABET = string.ascii_letters + string.digits


def generate_secret(length: int = 32) -> str:
    """A random secret of letters and digits (safe in URIs, shells and MinIO's 8-40 character rule)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def mask(value: str) -> str:
    """Enough of a secret to recognise it, never the whole: 'abcd…(32 chars)'."""
    return f"{value[:4]}…({len(value)} chars)" if value else "(empty)"


def weakness(value: str) -> str | None:
    """Why `value` is not acceptable as a secret, or None when it is."""
    if not value or value == PLACEHOLDER:
        return "still a placeholder"
    if value.lower() in KNOWN_DEFAULTS:
        return "a well-known default"
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    if "$" in value:
        return "written with '$', which docker compose's interpolation would change (use letters, digits and -_.)"
    return None


def check_secrets(settings: Settings, stack: StackName | None = None) -> None:
    """Raise PlaceholderSecretError naming every secret of `stack` that is a placeholder, default or too short."""
    problems = {name: why for name, value in settings.secrets(stack).items() if (why := weakness(value))}
    if problems:
        raise PlaceholderSecretError(problems, settings.env_file)


@dataclass
class InitResult:
    created_file: bool = False
    generated: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)


def init_env(env_file: Path, example: Path, secret_names: list[str], rotate: bool = False) -> InitResult:
    """Create `env_file` from `example` when missing and fill every empty or placeholder secret.

    Secrets already set are kept (even weak ones: `up` refuses those, naming them) unless `rotate`
    is set; the file is written with mode 0600.
    """
    result = InitResult()
    if not env_file.exists():
        write_private(env_file, example.read_text(encoding="utf-8"))
        result.created_file = True
    current = read_env(env_file)
    updates: dict[str, str] = {}
    for name in secret_names:
        value = current.get(name, "")
        if value in ("", PLACEHOLDER):
            updates[name] = generate_secret()
            result.generated.append(name)
        elif rotate:
            updates[name] = generate_secret()
            result.rotated.append(name)
    update_env(env_file, updates)
    return result

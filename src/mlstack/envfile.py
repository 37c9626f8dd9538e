"""Read and update `.env` files in place: comments and order kept, written atomically with mode 0600."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dotenv import dotenv_values

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def read_env(path: Path) -> dict[str, str]:
    """The variables of an env file ({} when it does not exist)."""
    if not path.exists():
        return {}
    return {key: value or "" for key, value in dotenv_values(path).items()}


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by the owner only (0600) from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_env(path: Path, values: dict[str, str]) -> None:
    """Set `values` in the env file: existing lines are rewritten in place, new keys appended."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    pending = dict(values)
    for index, line in enumerate(lines):
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in pending:
            key = match.group(1)
            lines[index] = f"{key}={pending.pop(key)}"
    lines.extend(f"{key}={value}" for key, value in pending.items())
    write_private(path, "\n".join(lines) + "\n")

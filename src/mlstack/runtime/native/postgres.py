"""Where the native runtime keeps the single PostgreSQL server, and how its data folder is made.

PostgreSQL refuses to run as root, so as root it runs as the `postgres` system user, which cannot
reach a checkout under a private folder such as /root: its data then lives in a folder of its own
under POSTGRES_HOMES (owned by `postgres`, mode 0700), named after the state folder, and
`mlstack status` says where. The ha topology's Patroni members keep their data in that same home
(postgres_cluster).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlstack.errors import RuntimeUnavailableError, ServiceStartError
from mlstack.runtime.native.process import base_env
from mlstack.settings import Settings

#: Where PostgreSQL keeps each project's data when it runs as the `postgres` user (mlstack as root).
POSTGRES_HOMES = Path("/var/lib/mlstack/postgres")


@dataclass(frozen=True)
class PostgresLayout:
    """Where PostgreSQL's data lives, the private folder around it (the working directory of
    initdb and the server), and which system user runs it (None: the current user)."""

    home: Path
    data: Path
    os_user: str | None


def postgres_layout(settings: Settings) -> PostgresLayout:
    """In the state folder for an ordinary user; as root, a `postgres`-owned folder under POSTGRES_HOMES."""
    user = _postgres_os_user()
    if user is None:
        native = settings.state_path / "native"
        return PostgresLayout(native, native / "postgres", None)
    home = POSTGRES_HOMES / hashlib.sha256(str(settings.state_path).encode()).hexdigest()[:16]
    return PostgresLayout(home, home / "data", user)


def prepare_home(settings: Settings, layout: PostgresLayout, data: Path | None, say: Callable[[str], object]) -> None:
    """The home of PostgreSQL's data (`data`: the single server's folder, made here; None for the
    cluster's members, whose folders Patroni makes), private to the user PostgreSQL runs as; as
    root, data that an earlier mlstack kept in the state folder moves here (PostgreSQL is stopped)."""
    if layout.os_user is not None:
        POSTGRES_HOMES.mkdir(parents=True, exist_ok=True, mode=0o755)
    layout.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    legacy = settings.state_path / "native" / "postgres"
    if data and layout.os_user is not None and (legacy / "PG_VERSION").exists() and not data.exists():
        say(f"moving PostgreSQL data from {legacy} to {data}")
        shutil.move(legacy, data)
    folders = (layout.home, data) if data else (layout.home,)
    if data:
        data.mkdir(exist_ok=True, mode=0o700)
    if layout.os_user is not None:
        (layout.home / "project").write_text(f"{settings.state_path}\n")
        for path in (*folders, layout.home / "project"):
            shutil.chown(path, layout.os_user, layout.os_user)
    for path in folders:
        path.chmod(0o700)


def initdb(settings: Settings, layout: PostgresLayout, postgres_bin: Path) -> None:
    """A new cluster in `layout.data`, its superuser's password handed over in a file private from its
    first byte and removed once read."""
    pwfile = layout.home / "initdb.pw"
    pwfile.unlink(missing_ok=True)
    descriptor = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        if layout.os_user is not None:
            os.fchown(handle.fileno(), *_ids(layout.os_user))
        handle.write(settings.postgres_password.get_secret_value())
    try:
        result = subprocess.run(
            [
                str(postgres_bin / "initdb"),
                "-D",
                str(layout.data),
                "-U",
                settings.postgres_user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
            ],
            env=base_env(),
            cwd=layout.home,
            user=layout.os_user,
            group=layout.os_user,
            extra_groups=[] if layout.os_user else None,
            capture_output=True,
            text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServiceStartError(f"initdb failed in {layout.data}:\n{result.stderr[-2000:]}")


def postgres_command(settings: Settings, layout: PostgresLayout, postgres_bin: Path) -> list[str]:
    return [
        str(postgres_bin / "postgres"),
        "-D",
        str(layout.data),
        "-p",
        str(settings.postgres_port),
        "-c",
        f"listen_addresses={settings.bind_address}",
        # TCP only: no socket file whose path could be too long or unreachable for `postgres`
        "-c",
        "unix_socket_directories=",
    ]


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _postgres_os_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError as missing:
        raise RuntimeUnavailableError(
            "PostgreSQL cannot run as root and there is no `postgres` user: install the Debian package "
            "postgresql (it creates one) or run mlstack as an ordinary user."
        ) from missing

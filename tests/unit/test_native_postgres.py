"""Where the native runtime keeps PostgreSQL, and how it hands initdb the superuser password."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from mlstack.runtime.native import postgres as native
from mlstack.runtime.native.postgres import PostgresLayout, initdb, postgres_layout


def test_an_ordinary_user_keeps_postgres_in_the_state_folder(project, monkeypatch):
    monkeypatch.setattr(native, "_postgres_os_user", lambda: None)
    layout = postgres_layout(project)
    assert layout.data == project.state_path / "native" / "postgres"
    assert layout.os_user is None


def test_root_keeps_postgres_where_the_postgres_user_can_reach_it_one_folder_per_project(project, monkeypatch):
    monkeypatch.setattr(native, "_postgres_os_user", lambda: "postgres")
    layout = postgres_layout(project)
    assert layout.home.parent == native.POSTGRES_HOMES and layout.data == layout.home / "data"
    assert layout.os_user == "postgres"
    assert postgres_layout(project) == layout
    other = project.model_copy(update={"state_dir": project.state_path.parent / "other-state"})
    assert postgres_layout(other).home != layout.home


def test_initdb_reads_a_password_file_private_from_its_first_byte(project, tmp_path, monkeypatch):
    home = tmp_path / "pg"
    home.mkdir(mode=0o700)
    layout = PostgresLayout(home, home / "data", None)
    seen = {}

    def fake_initdb(command, **kwargs):
        pwfile = Path(next(arg for arg in command if arg.startswith("--pwfile=")).split("=", 1)[1])
        seen["mode"], seen["text"], seen["cwd"] = stat.S_IMODE(pwfile.stat().st_mode), pwfile.read_text(), kwargs["cwd"]
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(native.subprocess, "run", fake_initdb)
    previous = os.umask(0)  # even a permissive umask must not open the file up
    try:
        initdb(project, layout, Path("/usr/lib/postgresql/15/bin"))
    finally:
        os.umask(previous)

    assert seen == {"mode": 0o600, "text": project.postgres_password.get_secret_value(), "cwd": home}
    assert list(home.iterdir()) == []  # removed once initdb has read it

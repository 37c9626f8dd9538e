"""`mlstack user add|remove`: people's MLflow accounts, managed as the admin of .env."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mlstack.cli.common import app, console, project_settings
from mlstack.errors import MlstackError

if TYPE_CHECKING:
    from mlstack.bootstrap.mlflow import MlflowUsers

user_app = typer.Typer(
    help="People's MLflow accounts (basic-auth), managed as the admin of .env.", no_args_is_help=True
)
app.add_typer(user_app, name="user")

#: Shortest password `mlstack user add` takes.
MIN_PASSWORD_LENGTH = 12
#: A person's login name: a letter or digit, then letters, digits and . _ @ - (64 at most); nothing a
#: URL, a path or a shell would read as something else.
USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def _users() -> MlflowUsers:
    from mlstack.bootstrap.mlflow import MlflowUsers
    from mlstack.bootstrap.preflight import require_mlflow_stack

    settings = project_settings()
    if not settings.mlflow_auth:
        raise MlstackError("MLflow authentication is off (MLFLOW_AUTH=false in .env): there are no accounts to manage")
    require_mlflow_stack(settings)
    return MlflowUsers(settings)


@user_app.command("add")
def user_add(
    name: str,
    read_only: Annotated[bool, typer.Option(help="Read every experiment and model, change nothing.")] = False,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (default: asked for, twice).")
    ] = False,
) -> None:
    """Create an MLflow account: EDIT on every experiment and model (log, tag, register; not delete or
    share), or with --read-only what MLFLOW_AUTH_DEFAULT_PERMISSION gives."""
    if not USERNAME.fullmatch(name):
        raise MlstackError(
            f"{name!r} is not a user name mlstack takes: a letter or digit, then letters, digits and . _ @ - "
            "(64 characters at most)"
        )
    users = _users()
    if users.exists(name):
        raise MlstackError(f"user {name!r} exists already: `mlstack user remove {name}` first to recreate it")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MlstackError(f"the password for {name!r} is too short: use {MIN_PASSWORD_LENGTH} characters or more")
    from mlstack.bootstrap.mlflow import WRITER_PERMISSION

    users.create(name, password)
    if not read_only:
        users.grant_writer(name)
    console.print(
        f"user {name}: created, {'read-only' if read_only else f'{WRITER_PERMISSION} on every experiment and model'}"
    )


@user_app.command("remove")
def user_remove(name: str) -> None:
    """Delete an MLflow account (its runs and models stay)."""
    users = _users()
    if name == users.settings.mlflow_auth_admin_username:
        raise MlstackError(f"{name!r} is the admin of .env (MLFLOW_AUTH_ADMIN_USERNAME): it cannot be removed")
    if not users.exists(name):
        raise MlstackError(f"there is no user {name!r} on {users.url}")
    users.delete(name)
    console.print(f"user {name}: removed")

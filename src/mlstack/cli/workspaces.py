"""`mlstack workspace add|list|grant`: MLflow's workspaces (one a team), through its REST API as the
admin of .env. Workspaces are on with MLFLOW_ENABLE_WORKSPACES=true in .env (then `mlstack up`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from mlstack.cli.common import app, console, project_settings
from mlstack.errors import MlstackError

if TYPE_CHECKING:
    from mlstack.bootstrap.mlflow import MlflowWorkspaces

workspace_app = typer.Typer(
    help="MLflow workspaces (one per team), managed as the admin of .env.", no_args_is_help=True
)
app.add_typer(workspace_app, name="workspace")

#: MLflow's rule for a workspace name (WorkspaceNameValidator): 2 to 63 lowercase letters, digits and
#: inner hyphens, not a reserved word.
WORKSPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
RESERVED = frozenset({"default", "workspaces", "api", "ajax-api", "static-files"})


def _workspaces() -> MlflowWorkspaces:
    from mlstack.bootstrap.mlflow import MlflowWorkspaces
    from mlstack.bootstrap.preflight import require_mlflow_stack

    settings = project_settings()
    if not settings.mlflow_enable_workspaces:
        raise MlstackError(
            "workspaces are off (MLFLOW_ENABLE_WORKSPACES=false in .env): set it to true, then `mlstack up`"
        )
    require_mlflow_stack(settings)
    return MlflowWorkspaces(settings)


def check_name(name: str) -> None:
    if name in RESERVED:
        raise MlstackError(f"{name!r} is a name MLflow reserves: choose another workspace name")
    if not WORKSPACE_NAME.fullmatch(name):
        raise MlstackError(
            f"{name!r} is not a workspace name MLflow takes: 2 to 63 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )


@workspace_app.command("add")
def workspace_add(
    name: str, description: Annotated[str | None, typer.Option(help="What the workspace is for.")] = None
) -> None:
    """Create a workspace (a team's own experiments, runs and models)."""
    check_name(name)
    workspaces = _workspaces()
    if any(workspace["name"] == name for workspace in workspaces.list()):
        raise MlstackError(f"workspace {name!r} exists already")
    workspaces.create(name, description)
    console.print(f"workspace {name}: created; give people access with `mlstack workspace grant {name} USER`")


@workspace_app.command("list")
def workspace_list() -> None:
    """The workspaces, one a line: name and description."""
    for workspace in _workspaces().list():
        description = workspace.get("description") or ""
        typer.echo(f"{workspace['name']}\t{description}".rstrip())


@workspace_app.command("grant")
def workspace_grant(
    name: str,
    user: str,
    permission: Annotated[
        Literal["USE", "MANAGE"],
        typer.Option(help="USE: read, log and create in the workspace; MANAGE: also grant others."),
    ] = "USE",
) -> None:
    """Give an MLflow account access to a workspace (its experiments, runs and models)."""
    from mlstack.bootstrap.mlflow import DEFAULT_WORKSPACE

    if name != DEFAULT_WORKSPACE:
        check_name(name)
    workspaces = _workspaces()
    if not workspaces.settings.mlflow_auth:
        raise MlstackError("MLflow authentication is off (MLFLOW_AUTH=false in .env): everyone sees every workspace")
    if not any(workspace["name"] == name for workspace in workspaces.list()):
        raise MlstackError(f"workspace {name!r} does not exist: `mlstack workspace add {name}` first")
    workspaces.grant(name, user, permission)
    console.print(f"user {user}: {permission} on workspace {name}")

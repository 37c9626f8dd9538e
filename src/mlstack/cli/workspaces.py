"""`mlstack workspace add|list|grant`: MLflow's workspaces (one a team), through its REST API as the
admin of .env. Workspaces are on with MLFLOW_ENABLE_WORKSPACES=true in .env (then `mlstack up`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import typer

from mlstack.cli.common import app, console, project_settings
from mlstack.errors import MlstackError
from mlstack.settings import Settings

workspace_app = typer.Typer(
    help="MLflow workspaces (one per team), managed as the admin of .env.", no_args_is_help=True
)
app.add_typer(workspace_app, name="workspace")

#: MLflow's rule for a workspace name (WorkspaceNameValidator): 2 to 63 lowercase letters, digits and
#: inner hyphens, not a reserved word.
WORKSPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
RESERVED = frozenset({"default", "workspaces", "api", "ajax-api", "static-files"})
WORKSPACES_PATH = "/api/3.0/mlflow/workspaces"
ROLES_PATH = "/api/3.0/mlflow/roles"
USER_ROLES_PATH = "/api/3.0/mlflow/users/roles/list"
#: MLflow's header naming the workspace a request acts in.


class MlflowWorkspaces:
    """MLflow's workspace API, as the admin of `.env`."""

    def __init__(self, settings: Settings):
        import requests

        self.settings = settings
        self.url = settings.mlflow_url
        self.session = requests.Session()
        if settings.mlflow_auth:
            self.session.auth = (
                settings.mlflow_auth_admin_username,
                settings.mlflow_auth_admin_password.get_secret_value(),
            )

    def _call(self, method: str, path: str, what: str, **kwargs: Any):
        response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        if response.status_code == 401:
            raise MlstackError(
                f"the MLflow server at {self.url} refuses the admin {self.settings.mlflow_auth_admin_username!r} "
                "with MLFLOW_AUTH_ADMIN_PASSWORD from .env"
            )
        if response.status_code == 503 and "workspaces support" in response.text:
            raise MlstackError(
                f"the MLflow server at {self.url} runs without workspaces: set MLFLOW_ENABLE_WORKSPACES=true "
                "in .env, then `mlstack up`"
            )
        if not response.ok:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise MlstackError(f"{what} failed at {self.url}: HTTP {response.status_code} {message[:300]}")
        return response.json() if response.content else {}

    def list(self) -> list[dict]:
        return self._call("GET", WORKSPACES_PATH, "listing workspaces").get("workspaces", [])

    def create(self, name: str, description: str | None) -> None:
        body = {"name": name, **({"description": description} if description else {})}
        self._call("POST", WORKSPACES_PATH, f"creating workspace {name!r}", json=body)

    def grant(self, workspace: str, username: str, permission: str) -> None:
        """`permission` (USE: read, log, create; MANAGE: also grant) on all of `workspace` to `username`,
        through MLflow's roles: a role `mlstack-<permission>` in the workspace holding that permission on
        the whole workspace, assigned to the person. Running it again changes nothing."""
        what = f"granting {permission} on workspace {workspace!r} to {username!r}"
        name = f"mlstack-{permission.lower()}"
        listed = self._call("GET", f"{ROLES_PATH}/list", what, params={"workspace": workspace})["roles"]
        role = next((role for role in listed if role["name"] == name), None)
        if role is None:
            body = {"name": name, "workspace": workspace, "description": f"{permission} on the whole workspace"}
            role = self._call("POST", f"{ROLES_PATH}/create", what, json=body)["role"]
            grant = {"role_id": role["id"], "resource_type": "workspace", "resource_pattern": "*"}
            self._call("POST", f"{ROLES_PATH}/permissions/add", what, json={**grant, "permission": permission})
        held = self._call("GET", USER_ROLES_PATH, what, params={"username": username})["roles"]
        if all(assigned["id"] != role["id"] for assigned in held):
            self._call("POST", f"{ROLES_PATH}/assign", what, json={"username": username, "role_id": role["id"]})


def _workspaces() -> MlflowWorkspaces:
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
    if name != "default":
        check_name(name)
    workspaces = _workspaces()
    if not workspaces.settings.mlflow_auth:
        raise MlstackError("MLflow authentication is off (MLFLOW_AUTH=false in .env): everyone sees every workspace")
    if not any(workspace["name"] == name for workspace in workspaces.list()):
        raise MlstackError(f"workspace {name!r} does not exist: `mlstack workspace add {name}` first")
    workspaces.grant(name, user, permission)
    console.print(f"user {user}: {permission} on workspace {name}")

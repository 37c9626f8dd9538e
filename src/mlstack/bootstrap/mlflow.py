"""MLflow bootstrap: the client settings users need, written to .env, and (with authentication on)
the account the team's scripts log with; `MlflowUsers` is the auth app's user API and `MlflowWorkspaces`
MLflow's workspace API, both as the admin, and `reset_stack_logins` the auth app's database when its
server is stopped."""

from __future__ import annotations

from typing import Any

import requests

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.envfile import read_env, update_env
from mlstack.errors import MlstackError
from mlstack.secrets import generate_secret
from mlstack.settings import Settings

#: What a writing account may do with every experiment and registered model: log, tag, register,
#: but not delete them or change who may see them (MANAGE).
WRITER_PERMISSION = "EDIT"
WRITER_RESOURCES = ("experiment", "registered_model")
#: The workspace of requests naming none (MLflow's DEFAULT_WORKSPACE_NAME), where scripts log.
DEFAULT_WORKSPACE = "default"


class AuthError(MlstackError):
    """The auth app refused a call (wrong admin credentials, bad name)."""


class MlflowUsers:
    """Users and grants of MLflow's basic-auth app, through its REST API as the admin of `.env`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.mlflow_url
        self.session = requests.Session()
        self.session.auth = (
            settings.mlflow_auth_admin_username,
            settings.mlflow_auth_admin_password.get_secret_value(),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        if response.status_code == 401:
            raise AuthError(
                f"the MLflow server at {self.url} refuses the admin {self.settings.mlflow_auth_admin_username!r} "
                "with MLFLOW_AUTH_ADMIN_PASSWORD from .env: the admin was created on the server's first start "
                "with the password .env had then; put that password back in .env"
            )
        return response

    def _checked(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        response = self._call(method, path, **kwargs)
        if not response.ok:
            raise AuthError(f"{what} failed at {self.url}: HTTP {response.status_code} {response.text[:300]}")
        return response

    def exists(self, username: str) -> bool:
        response = self._call("GET", "/api/2.0/mlflow/users/get", params={"username": username})
        if response.status_code == 404:
            return False
        response.raise_for_status()
        return True

    def create(self, username: str, password: str) -> None:
        body = {"username": username, "password": password}
        self._checked("POST", "/api/2.0/mlflow/users/create", f"creating user {username!r}", json=body)

    def set_password(self, username: str, password: str) -> None:
        body = {"username": username, "password": password}
        self._checked("PATCH", "/api/2.0/mlflow/users/update-password", f"setting {username!r}'s password", json=body)

    def delete(self, username: str) -> None:
        self._checked(
            "DELETE", "/api/2.0/mlflow/users/delete", f"removing user {username!r}", json={"username": username}
        )

    def permission(self, username: str, resource_type: str, resource_id: str) -> str:
        """What `username` may do with the resource, as the server resolves it (grants, else the default)."""
        where = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        what = f"reading {username!r}'s permission on {resource_type} {resource_id!r}"
        return self._checked("GET", "/api/3.0/mlflow/users/permissions/get", what, params=where).json()["permission"]

    def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        """`permission` on one resource, or on every one of its type with `resource_id` "*"; replaces a
        grant of another permission there, and does nothing when it is granted already."""
        where = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        if self.permission(username, resource_type, resource_id) == permission:
            return
        what = f"granting {permission} on {resource_type} {resource_id!r} to {username!r}"
        response = self._call(
            "POST", "/api/3.0/mlflow/users/permissions/grant", json={**where, "permission": permission}
        )
        if "RESOURCE_ALREADY_EXISTS" in response.text:  # another permission was granted there: replace it
            self._checked("POST", "/api/3.0/mlflow/users/permissions/revoke", what, json=where)
            response = self._call(
                "POST", "/api/3.0/mlflow/users/permissions/grant", json={**where, "permission": permission}
            )
        if not response.ok:
            raise AuthError(f"{what} failed at {self.url}: HTTP {response.status_code} {response.text[:300]}")

    def grant_writer(self, username: str) -> None:
        for resource_type in WRITER_RESOURCES:
            self.grant(username, resource_type, "*", WRITER_PERMISSION)

    def logs_in(self, username: str, password: str) -> bool:
        response = requests.get(f"{self.url}/api/2.0/mlflow/users/current", auth=(username, password), timeout=30)
        return response.status_code == 200


WORKSPACES_PATH = "/api/3.0/mlflow/workspaces"
ROLES_PATH = "/api/3.0/mlflow/roles"
USER_ROLES_PATH = "/api/3.0/mlflow/users/roles/list"


class MlflowWorkspaces:
    """MLflow's workspace API, as the admin of `.env`."""

    def __init__(self, settings: Settings):
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


def reset_stack_logins(settings: Settings) -> None:
    """In the auth app's database itself (the server may be stopped: a restore): the admin and the client
    account take this .env's passwords, so mlstack (and the team's scripts) keep working with the
    stack's own secrets; everyone else keeps theirs."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(settings.backend_store_uri(database=settings.mlflow_auth_db))
    logins = {settings.mlflow_auth_admin_username: (settings.mlflow_auth_admin_password.get_secret_value(), True)}
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        logins[settings.mlflow_tracking_username] = (settings.mlflow_tracking_password.get_secret_value(), False)
    for username, (password, is_admin) in logins.items():
        if store.has_user(username):
            store.update_user(username, password=password, is_admin=is_admin or None)
        else:
            store.create_user(username, password, is_admin=is_admin)
    store.engine.dispose()


def write_client_settings(settings: Settings) -> StepResult:
    """MLFLOW_TRACKING_URI in .env, pointing at the server as the host sees it."""
    wanted = {"MLFLOW_TRACKING_URI": settings.mlflow_url}
    current = read_env(settings.env_file)
    if all(current.get(key) == value for key, value in wanted.items()):
        return StepResult("MLflow client settings", Outcome.PRESENT, settings.mlflow_url)
    update_env(settings.env_file, wanted)
    outcome = Outcome.UPDATED if "MLFLOW_TRACKING_URI" in current else Outcome.CREATED
    return StepResult("MLflow client settings", outcome, f"MLFLOW_TRACKING_URI={settings.mlflow_url} in .env")


def ensure_client_account(settings: Settings) -> StepResult:
    """The scripts' account (MLFLOW_CLIENT_USERNAME) logs in with MLFLOW_TRACKING_PASSWORD from .env and may
    write to every experiment and model (with workspaces on, in the default workspace, where requests
    naming none act); a missing account is created, a lost password replaced."""
    name = "MLflow client account"
    if not settings.mlflow_auth:
        return StepResult(name, Outcome.PRESENT, "authentication is off (MLFLOW_AUTH=false): no account needed")
    username = settings.mlflow_client_username
    known = read_env(settings.env_file)
    password = known.get("MLFLOW_TRACKING_PASSWORD") if known.get("MLFLOW_TRACKING_USERNAME") == username else None
    users = MlflowUsers(settings)
    if not users.exists(username):
        password = password or generate_secret()
        users.create(username, password)
        outcome = Outcome.CREATED
    elif password and users.logs_in(username, password):
        outcome = Outcome.PRESENT
    else:
        password = generate_secret()
        users.set_password(username, password)
        outcome = Outcome.UPDATED
    users.grant_writer(username)
    if settings.mlflow_enable_workspaces:
        MlflowWorkspaces(settings).grant(DEFAULT_WORKSPACE, username, "USE")
    if outcome is not Outcome.PRESENT:
        update_env(settings.env_file, {"MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password})
    where = f", USE on workspace {DEFAULT_WORKSPACE!r}" if settings.mlflow_enable_workspaces else ""
    detail = f"{username}: {WRITER_PERMISSION} on every experiment and model{where}"
    detail += "; MLFLOW_TRACKING_USERNAME/PASSWORD in .env"
    return StepResult(name, outcome, detail)


CLIENT_STEPS = (
    Step("MLflow client settings", write_client_settings),
    Step("MLflow client account", ensure_client_account),
)

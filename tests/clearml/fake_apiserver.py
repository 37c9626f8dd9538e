"""Stand-ins for the ClearML apiserver's JSON API and the fileserver (unit tests only).

The apiserver part knows one fixed user, credentials, queues, and the project, task, model and
event calls the SDK 2.1.12 makes to register a model or import an offline session (read from
clearml/backend_api/services/v2_23 and, for the answers, clearml-server's apiserver/services).
It keeps what it is told in dicts so tests can check what landed on the "server".
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import jwt

SDK_KEY, SDK_SECRET = "SDKKEY0000000000000000", "sdk-secret-for-the-fake-apiserver"
API_VERSION = "2.31"  # clearml-server 2.x
SERVER_VERSION = "2.3.0"
#: Statuses in which the server lets tasks.edit change more than name, tags and comment without force.
EDITABLE_STATUSES = ("created", "in_progress")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ApiError(Exception):
    def __init__(self, status: int, message: str, subcode: int = 0):
        super().__init__(message)
        self.status = status
        self.subcode = subcode


def _matches(value, pattern) -> bool:
    """The server's filters: a list means "any of", a string is a regex (name) or an exact value."""
    if isinstance(pattern, list):
        return any(_matches(value, item) for item in pattern)
    if isinstance(value, list):
        return pattern in value
    return value == pattern


class FakeApiServer:
    """Knows one fixed user; tokens are JWTs (the SDK reads the API version from them)."""

    def __init__(self, user: str, password: str):
        self.users = {user: password}
        self.credentials: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self.tokens: set[str] = set()
        self.projects: dict[str, dict] = {}
        self.tasks: dict[str, dict] = {}
        self.models: dict[str, dict] = {}
        self.events: list[dict] = []
        self.calls: list[str] = []
        #: endpoint -> error message (HTTP 500) or ApiError: the next call of that endpoint fails so (once).
        self.fail_once: dict[str, str | ApiError] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _token(self) -> str:
        claims = {"exp": int(time.time()) + 86400, "api_version": API_VERSION, "server_version": SERVER_VERSION}
        claims["identity"] = {"user": "user-1", "company": "company-1", "role": "user"}
        token = jwt.encode(claims, secrets.token_hex(32), algorithm="HS256")
        self.tokens.add(token)
        return token

    # --- the calls; each returns the response's data or raises ApiError ---

    def call(self, endpoint: str, payload, auth: str) -> dict:
        if endpoint == "debug.ping":
            return {"msg": "ClearML server"}
        if endpoint == "auth.login":
            if not auth.startswith("Basic "):
                raise ApiError(401, "missing credentials")
            user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(user) != secret and self.credentials.get(user) != secret:
                raise ApiError(401, "failed to locate provided credentials")
            return {"token": self._token()}
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            raise ApiError(401, "invalid token")
        if endpoint in self.fail_once:
            error = self.fail_once.pop(endpoint)
            raise error if isinstance(error, ApiError) else ApiError(500, error)
        handler = getattr(self, "_" + endpoint.replace(".", "_"), None)
        if handler is None:
            raise ApiError(400, f"endpoint {endpoint} is not known to the fake apiserver")
        return handler(payload)

    def _auth_create_credentials(self, payload: dict) -> dict:
        key, secret = secrets.token_hex(10).upper(), secrets.token_urlsafe(30)
        self.credentials[key] = secret
        return {"credentials": {"access_key": key, "secret_key": secret}}

    def _queues_get_all(self, payload: dict) -> dict:
        """Queues whose name matches `name` as a regex, as the server matches it."""
        queues = [{"id": queue_id, "name": name} for name, queue_id in self.queues.items()]
        return {"queues": [queue for queue in queues if re.search(payload.get("name") or "", queue["name"])]}

    def _queues_create(self, payload: dict) -> dict:
        self.queues[payload["name"]] = secrets.token_hex(16)
        return {"id": self.queues[payload["name"]]}

    def _projects_get_all(self, payload: dict) -> dict:
        return {"projects": self._listing(self.projects, payload)}

    def _projects_create(self, payload: dict) -> dict:
        project_id = secrets.token_hex(16)
        self.projects[project_id] = {"id": project_id, "name": payload["name"], "basename": payload["name"]}
        return {"id": project_id}

    def _projects_get_by_id(self, payload: dict) -> dict:
        return {"project": self._get(self.projects, payload["project"], "project")}

    def _tasks_create(self, payload: dict) -> dict:
        task_id = secrets.token_hex(16)
        task = {"tags": [], "system_tags": [], "comment": "", **payload, "id": task_id, "status": "created"}
        task.setdefault("execution", {}).setdefault("artifacts", [])
        task.setdefault("models", {"input": [], "output": []})
        task.setdefault("output", {})
        task["created"] = task["last_update"] = _now()
        self.tasks[task_id] = task
        return {"id": task_id}

    def _tasks_get_by_id(self, payload: dict) -> dict:
        return {"task": self._get(self.tasks, payload["task"], "task")}

    def _tasks_get_all(self, payload: dict) -> dict:
        return {"tasks": self._listing(self.tasks, payload)}

    def _tasks_edit(self, payload: dict) -> dict:
        task = self._get(self.tasks, payload["task"], "task")
        fields = {k: v for k, v in payload.items() if k not in ("task", "force")}
        if task["status"] not in EDITABLE_STATUSES and not payload.get("force"):
            raise ApiError(400, f"Invalid task status: status={task['status']}")
        if "output_dest" in fields:
            task["output"]["destination"] = fields.pop("output_dest")
        for artifact in (fields.get("execution") or {}).get("artifacts") or []:
            artifact.setdefault("mode", "output")  # the server's Artifact.mode default
        task.update(fields)
        return {"updated": 1, "fields": fields}

    def _status(self, payload: dict, status: str) -> dict:
        task = self._get(self.tasks, payload["task"], "task")
        task["status"] = status
        if payload.get("status_reason"):
            task["status_reason"] = payload["status_reason"]
        return {"updated": 1, "fields": {"status": status}}

    def _tasks_started(self, payload: dict) -> dict:
        return self._status(payload, "in_progress")

    def _tasks_completed(self, payload: dict) -> dict:
        return self._status(payload, "completed")

    def _tasks_failed(self, payload: dict) -> dict:
        return self._status(payload, "failed")

    def _tasks_delete(self, payload: dict) -> dict:
        task = self.tasks.pop(payload["task"], None)
        if task is None:
            raise ApiError(400, f"task {payload['task']} not found")
        if payload.get("delete_output_models", True):
            for model_id in [m["model"] for m in task["models"].get("output", [])]:
                self.models.pop(model_id, None)
        return {"deleted": True, "updated_children": 0, "updated_models": 0, "urls": {}}

    def _tasks_add_or_update_model(self, payload: dict) -> dict:
        task = self._get(self.tasks, payload["task"], "task")
        models = task["models"].setdefault(payload["type"], [])
        models[:] = [m for m in models if m["name"] != payload["name"]]
        models.append({"name": payload["name"], "model": payload["model"]})
        return {"updated": 1}

    def _models_create(self, payload: dict) -> dict:
        model_id = secrets.token_hex(16)
        self.models[model_id] = {"tags": [], "system_tags": [], "metadata": {}, **payload, "id": model_id}
        self.models[model_id].setdefault("ready", False)
        self.models[model_id]["created"] = _now()
        return {"id": model_id, "created": True}

    def _models_get_by_id(self, payload: dict) -> dict:
        return {"model": self._get(self.models, payload["model"], "model")}

    def _models_get_all(self, payload: dict) -> dict:
        return {"models": self._listing(self.models, payload)}

    def _models_edit(self, payload: dict) -> dict:
        model = self._get(self.models, payload["model"], "model")
        model.update({k: v for k, v in payload.items() if k != "model"})
        return {"updated": 1, "fields": payload}

    def _models_add_or_update_metadata(self, payload: dict) -> dict:
        model = self._get(self.models, payload["model"], "model")
        model["metadata"].update({item["key"]: item for item in payload["metadata"]})
        return {"updated": 1}

    def _models_delete(self, payload: dict) -> dict:
        self.models.pop(payload["model"], None)
        return {"deleted": True}

    def _events_add_batch(self, payload: list) -> dict:
        self.events.extend(payload)
        return {"added": len(payload), "errors": 0}

    def _events_get_task_events(self, payload: dict) -> dict:
        found = [e for e in self.events if e.get("task") == payload["task"] and e.get("type") == payload["event_type"]]
        return {"events": found, "returned": len(found), "total": len(found), "scroll_id": None}

    @staticmethod
    def _get(store: dict, object_id: str, kind: str) -> dict:
        if object_id not in store:
            raise ApiError(400, f"Invalid {kind} id: id={object_id}")
        return store[object_id]

    def _listing(self, store: dict, payload: dict) -> list[dict]:
        """get_all: filtered, ordered by `order_by` (e.g. ["-created"]), one page."""
        found = [document for document in store.values() if self._selected(document, payload)]
        for key in reversed(payload.get("order_by") or []):
            found.sort(key=lambda document: document.get(key.lstrip("-")) or "", reverse=key.startswith("-"))
        size = payload.get("page_size") or len(found) or 1
        start = (payload.get("page") or 0) * size
        return found[start : start + size]

    @staticmethod
    def _selected(document: dict, payload: dict) -> bool:
        """get_all filters: id (list), name (regex), project, tags / system_tags (any of), status."""
        for key, wanted in payload.items():
            if key in ("id", "status", "tags", "system_tags", "project", "task") and wanted not in (None, []):
                values = [w for w in (wanted if isinstance(wanted, list) else [wanted]) if not str(w).startswith("-")]
                excluded = [w[1:] for w in (wanted if isinstance(wanted, list) else []) if str(w).startswith("-")]
                value = document.get(key if key != "task" else "task")
                if isinstance(value, dict):  # project may be stored as {"id": ...}
                    value = value.get("id")
                if values and not _matches(value, values):
                    return False
                if excluded and _matches(value, excluded):
                    return False
            if key == "name" and wanted and not re.search(wanted, document.get("name") or ""):
                return False
        return True

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, endpoint: str, data: dict | None = None, message: str = "", subcode: int = 0):
                meta = {
                    "result_code": status,
                    "result_subcode": subcode,
                    "result_msg": message or "OK",
                    "endpoint": {"name": endpoint, "requested_version": API_VERSION, "actual_version": API_VERSION},
                }
                body = json.dumps({"meta": meta, "data": data or {}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_call(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                endpoint = self.path.split("?")[0].strip("/").split("/")[-1]  # /v2.23/tasks.create
                if endpoint == "events.add_batch":  # one JSON event per line
                    payload = [json.loads(line) for line in raw.splitlines() if line.strip()]
                else:
                    payload = json.loads(raw or "{}")
                    payload.pop("method", None)  # the SDK sends GET with a JSON body and says so
                with fake.lock:
                    fake.calls.append(endpoint)
                    try:
                        data = fake.call(endpoint, payload, self.headers.get("Authorization", ""))
                    except ApiError as error:
                        return self.reply(error.status, endpoint, message=str(error), subcode=error.subcode)
                return self.reply(200, endpoint, data)

            do_POST = do_GET = handle_call

        return Handler


class FakeFileServer:
    """The fileserver's upload (multipart POST, one field per file named by its path), download, delete.

    With `tokens` (an apiserver's), it asks for a login as upstream's does with its auth on: every call
    but `GET /` needs `Authorization: Bearer <a token of that apiserver>`, else 401."""

    def __init__(self, tokens: set[str] | None = None):
        self.files: dict[str, bytes] = {}
        self.tokens = tokens
        self.refuse_uploads = 0  # how many next uploads fail with HTTP 500
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: bytes = b""):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def refused(self) -> bool:
                """True, having answered 401, when a login is needed and this request has none that counts."""
                authorization = self.headers.get("Authorization", "")
                if fake.tokens is None or authorization.removeprefix("Bearer ") in fake.tokens:
                    return False
                self.answer(401, b"Unauthorized")
                return True

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.refused():
                    return None
                if fake.refuse_uploads:
                    fake.refuse_uploads -= 1
                    return self.answer(500, b"disk full")
                header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = BytesParser(policy=HTTP).parsebytes(header + body)
                folder = unquote(self.path.split("?")[0]).strip("/")
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition").strip("/")
                    fake.files["/".join(filter(None, (folder, name)))] = part.get_payload(decode=True)
                self.answer(200, b"{}")

            def do_GET(self):
                path = unquote(self.path.split("?")[0]).strip("/")
                if path == "":
                    return self.answer(200, b"OK")
                if self.refused():
                    return None
                if path not in fake.files:
                    return self.answer(404)
                self.answer(200, fake.files[path])

            def do_DELETE(self):
                if self.refused():
                    return None
                fake.files.pop(unquote(self.path.split("?")[0]).strip("/"), None)
                self.answer(200)

        return Handler


@functools.cache
def shared_servers() -> tuple[FakeApiServer, FakeFileServer]:
    """One apiserver and fileserver per test process, with client credentials SDK_KEY / SDK_SECRET.

    The SDK keeps the host of its first session for the whole process, so every SDK-level test
    of the process must talk to the same servers; tests tell their objects apart by id."""
    api, files = FakeApiServer("mlstack", secrets.token_urlsafe(24)), FakeFileServer()
    api.credentials[SDK_KEY] = SDK_SECRET
    return api, files

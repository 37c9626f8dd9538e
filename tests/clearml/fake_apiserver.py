"""A stand-in for the ClearML apiserver's JSON API (unit tests only): auth and queues."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeApiServer:
    """Knows one fixed user; tokens are opaque strings; counts created credentials."""

    def __init__(self, user: str, password: str):
        self.users = {user: password}
        self.credentials: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self.tokens: set[str] = set()
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

            def reply(self, status: int, data: dict | None = None):
                body = json.dumps({"meta": {"result_code": status}, "data": data or {}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                endpoint = self.path.lstrip("/")
                auth = self.headers.get("Authorization", "")
                if endpoint == "auth.login":
                    if not auth.startswith("Basic "):
                        return self.reply(401)
                    user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
                    if fake.users.get(user) != secret and fake.credentials.get(user) != secret:
                        return self.reply(401)
                    token = secrets.token_hex(8)
                    fake.tokens.add(token)
                    return self.reply(200, {"token": token})
                if not auth.startswith("Bearer ") or auth[7:] not in fake.tokens:
                    return self.reply(401)
                if endpoint == "auth.create_credentials":
                    key, secret = secrets.token_hex(10).upper(), secrets.token_urlsafe(30)
                    fake.credentials[key] = secret
                    return self.reply(200, {"credentials": {"access_key": key, "secret_key": secret}})
                if endpoint == "queues.get_all":
                    return self.reply(200, {"queues": [{"id": i, "name": n} for n, i in fake.queues.items()]})
                if endpoint == "queues.create":
                    fake.queues[payload["name"]] = secrets.token_hex(16)
                    return self.reply(200, {"id": fake.queues[payload["name"]]})
                return self.reply(400)

        return Handler

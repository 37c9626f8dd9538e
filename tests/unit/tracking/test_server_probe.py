"""Whether a run's end goes to the server or to the spool: any answer counts, silence and gateway errors do not."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from tenacity import stop_after_attempt

from mlstack.tracking.mlflow.transport import server_answers

probe = server_answers.retry_with(stop=stop_after_attempt(1))


def serving(status: int) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


@pytest.mark.parametrize(("status", "answers"), [(200, True), (401, True), (404, True), (502, False), (503, False)])
def test_an_answer_counts_unless_it_is_a_gateway_error(status, answers):
    assert probe(serving(status)) is answers


def test_a_refused_connection_is_no_answer():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}") is False


def test_local_stores_always_answer():
    assert probe("sqlite:///tmp/mlflow.db") is True

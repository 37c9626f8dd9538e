"""How the metric transport reads the server's refusals: a refused login is worth waiting for (the
points are kept), a refused batch is not."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from mlstack.tracking.mlflow.transport import RejectedBatchError, RestMetricSender, TransientSendError

POINT = [("run", "loss", 0.5, 0, 1)]


def answering(status: int, body: dict) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def test_a_refused_login_keeps_the_points_and_names_the_settings_to_check():
    url = answering(401, {"error_code": "UNAUTHENTICATED", "message": "You are not authenticated."})
    with pytest.raises(TransientSendError, match="check MLFLOW_TRACKING_USERNAME/PASSWORD in .env"):
        RestMetricSender(url).send("run", POINT)


def test_a_refused_batch_is_rejected_for_good():
    url = answering(400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"})
    with pytest.raises(RejectedBatchError, match="INVALID_PARAMETER_VALUE: bad key"):
        RestMetricSender(url).send("run", POINT)

"""The ~45 ms stall of a default `mlflow server` on kept-alive connections: its cause, and the one change that
removes it.

`mlflow server` runs `uvicorn --workers 4`. With more than one worker, uvicorn's supervisor binds the
listening socket itself (`Config.bind_socket`), and up to uvicorn 0.54 it created that socket with proto 0
(Kludex/uvicorn#3149). Accepted sockets inherit the listener's proto, and asyncio turns TCP_NODELAY on only
for sockets whose proto is IPPROTO_TCP, so Nagle's algorithm stays on. uvicorn writes the status line and
headers, then the body, in two sends: on a kept-alive connection the body waits until the client ACKs the
headers, which Linux delays by ~40 ms. A new connection starts in quick-ACK mode, so it does not stall; a
single-process uvicorn (`--workers 1`) gets its listener from getaddrinfo (proto 6), so neither does it.
uvicorn 0.55 creates the listener with IPPROTO_TCP.

Each configuration runs on the installed uvicorn, once as it is and once with the listener given proto 0
as uvicorn <= 0.54 did (a sitecustomize on the server's PYTHONPATH wraps `Config.bind_socket`): the only
change within a pair. Every server is started here on a free loopback port (MLflow on SQLite in a
temporary folder, no auth) and stopped before the next. Requests are raw HTTP/1.1 GETs on a socket with
TCP_NODELAY (as urllib3 sets it): on one kept-alive connection, and on a new connection each; "headers ->
body" is the time between the response's first and last byte. For MLflow, a plain `MlflowClient.get_run`
on its kept-alive session is timed too.

    .venv/bin/python benchmarks/uvicorn_stall.py [--requests 100]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from mlflow import MlflowClient
from rich.console import Console
from rich.table import Table
from servers import free_port, start_process, wait_until_quiet

from mlstack.runtime.native.process import base_env

LEGACY_PROTO = "UVICORN_STALL_LEGACY_PROTO"
#: Imported by every Python process of the server with LEGACY_PROTO set: the listener as uvicorn <= 0.54 made it.
SITECUSTOMIZE = f"""\
import os

if os.environ.get("{LEGACY_PROTO}"):
    import socket

    import uvicorn.config

    bind_socket = uvicorn.config.Config.bind_socket

    def legacy_bind_socket(self):
        sock = bind_socket(self)
        if sock.family == socket.AF_UNIX:
            return sock
        return socket.socket(sock.family, sock.type, 0, fileno=sock.detach())

    uvicorn.config.Config.bind_socket = legacy_bind_socket
"""

#: An ASGI app with nothing in it: one small JSON body after the headers, as any ASGI response is sent.
TRIVIAL_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
"""


@dataclass(frozen=True)
class Config:
    name: str
    mlflow: bool
    workers: int
    legacy_proto: bool


CONFIGS = [
    Config("trivial ASGI app, uvicorn --workers 2", False, 2, True),
    Config("trivial ASGI app, uvicorn --workers 2", False, 2, False),
    Config("trivial ASGI app, uvicorn --workers 1", False, 1, True),
    Config("default `mlflow server` (uvicorn --workers 4)", True, 4, True),
    Config("default `mlflow server` (uvicorn --workers 4)", True, 4, False),
]


def exchange(sock: socket.socket, request: bytes) -> tuple[float, float]:
    """One request on `sock`: (ms until the whole response, ms from its first byte to its last)."""
    start = time.perf_counter()
    sock.sendall(request)
    data, first, length = b"", 0.0, None
    while length is None or len(data) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        first = first or time.perf_counter()
        data += chunk
        if length is None and b"\r\n\r\n" in data:
            head, _, _ = data.partition(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
            length = len(head) + 4 + int(fields.get(b"content-length") or fields[b"Content-Length"])
    end = time.perf_counter()
    return (end - start) * 1000, (end - first) * 1000


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def measure(port: int, path: str, count: int) -> dict[str, float]:
    """Medians over `count` requests on one kept-alive connection and over `count` new connections."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    kept, gaps, fresh = [], [], []
    with connect(port) as sock:
        exchange(sock, request)  # the connection's first exchanges are quick-ACKed
        for _ in range(count):
            total, gap = exchange(sock, request)
            kept.append(total)
            gaps.append(gap)
    for _ in range(count):
        with connect(port) as sock:
            fresh.append(exchange(sock, request)[0])
    return {"kept": statistics.median(kept), "gap": statistics.median(gaps), "new": statistics.median(fresh)}


def server_command(config: Config, port: int, workdir: Path) -> list[str]:
    if config.mlflow:
        return [
            *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)),
            *("--backend-store-uri", f"sqlite:///{workdir / f'mlflow-{port}.db'}"),
            *("--default-artifact-root", str(workdir / "artifacts")),
            *(() if config.workers == 4 else ("--workers", str(config.workers))),
        ]
    return [
        *(sys.executable, "-m", "uvicorn", "--app-dir", str(workdir), "--no-access-log"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(config.workers), "trivial:app"),
    ]


def run(config: Config, workdir: Path, count: int) -> dict[str, float]:
    """Start `config`'s server, time it, stop it."""
    port = free_port()
    env = {**base_env(), "PYTHONPATH": str(workdir / "site")}
    if config.legacy_proto:
        env[LEGACY_PROTO] = "1"
    health = f"http://127.0.0.1:{port}/{'health' if config.mlflow else ''}"
    process = start_process(server_command(config, port, workdir), env, workdir, health)
    try:
        wait_until_quiet(process.pid())
        if not config.mlflow:
            return measure(port, "/", count)
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
        run_id = client.create_run(client.create_experiment("stall")).info.run_id
        results = measure(port, f"/api/2.0/mlflow/runs/get?run_id={run_id}", count)
        samples = []
        client.get_run(run_id)
        for _ in range(count):
            start = time.perf_counter()
            client.get_run(run_id)
            samples.append((time.perf_counter() - start) * 1000)
        return {**results, "client": statistics.median(samples)}
    finally:
        process.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="requests per measurement")
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 160)
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        workdir = Path(temporary)
        (workdir / "site").mkdir()
        (workdir / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (workdir / "trivial.py").write_text(TRIVIAL_APP)
        for config in CONFIGS:
            console.print(f"{config.name}, listener proto {0 if config.legacy_proto else 6} ...")
            rows.append((config, run(config, workdir, args.requests)))
    table = Table(
        "server",
        "listener proto\n(accepted: TCP_NODELAY)",
        "kept-alive\nms",
        "kept-alive\nheaders -> body ms",
        "new connection\nms",
        "MlflowClient.get_run\nkept-alive ms",
        title=f"uvicorn {uvicorn.__version__}: median of {args.requests} raw GETs (runs/get for MLflow)",
    )
    for config, result in rows:
        if config.workers == 1:
            proto = "getaddrinfo: 6 (on)"
        else:
            proto = "0, as uvicorn <= 0.54 (off)" if config.legacy_proto else "IPPROTO_TCP, as 0.55 (on)"
        client = f"{result['client']:.1f}" if "client" in result else ""
        table.add_row(
            config.name, proto, f"{result['kept']:.1f}", f"{result['gap']:.1f}", f"{result['new']:.1f}", client
        )
    console.print(table)


if __name__ == "__main__":
    main()

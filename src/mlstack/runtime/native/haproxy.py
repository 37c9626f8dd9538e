"""HAProxy in front of a group of members (the ha topology's `postgres`, `seaweedfs` and `mlflow`): one
configuration shape for all three, each member checked over HTTP on a port of its own."""

from __future__ import annotations

import csv
import socket
from dataclasses import dataclass
from pathlib import Path

#: Checks a second apart; a member is down after two failures and back after two passes.
CHECK = "inter 1s fall 2 rise 2"


@dataclass(frozen=True)
class Backend:
    """A member behind the proxy: its name, the port it serves on and the port of its health check, at
    `address`."""

    name: str
    port: int
    check_port: int
    address: str = "127.0.0.1"


def haproxy_config(
    name: str,
    bind: str,
    port: int,
    backends: tuple[Backend, ...],
    check_uri: str,
    *,
    tcp: bool,
    extra: str = "",
    admin_socket: Path | None = None,
) -> str:
    """`name` listening on `bind:port`, spreading connections over `backends` (each checked with a GET of
    `check_uri` answering 200). `tcp`: pass the bytes through (PostgreSQL, S3 with its signatures);
    otherwise HTTP mode. `extra`: more lines for the `listen` section (balance, retries, ...). A member
    marked down has its connections cut, so clients reconnect to one that serves. `admin_socket`: a
    socket file, its owner's only, for `admin` (each member's state; drain one, make it ready again)."""
    servers = "".join(f"  server {b.name} {b.address}:{b.port} check port {b.check_port}\n" for b in backends)
    timeouts = "  timeout client 30m\n  timeout server 30m\n" if tcp else "  timeout client 5m\n  timeout server 5m\n"
    socket_line = f"  stats socket {admin_socket} mode 600 level admin\n" if admin_socket else ""
    return (
        f"global\n  maxconn 2000\n{socket_line}"
        f"defaults\n  mode {'tcp' if tcp else 'http'}\n  timeout connect 4s\n{timeouts}  timeout check 2s\n"
        f"listen {name}\n  bind {bind}:{port}\n"
        f"  option httpchk\n  http-check send meth GET uri {check_uri}\n  http-check expect status 200\n{extra}"
        f"  default-server {CHECK} on-marked-down shutdown-sessions\n{servers}"
    )


@dataclass(frozen=True)
class MemberState:
    """A member as HAProxy sees it: `status` (UP, DOWN, DRAIN, MAINT, ...; a transition as `UP 1/2`) and
    the requests it holds now."""

    status: str
    sessions: int


def admin(admin_socket: Path, command: str) -> str:
    """One command on HAProxy's admin socket (`show stat`, `set server <proxy>/<member> state drain`), its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(admin_socket))
        connection.sendall(f"{command}\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.decode()


def member_states(admin_socket: Path, proxy: str) -> dict[str, MemberState]:
    """Each member of `proxy` by name, from `show stat`; empty when HAProxy does not answer."""
    try:
        table = admin(admin_socket, "show stat").removeprefix("# ").splitlines()
    except OSError:
        return {}
    return {
        row["svname"]: MemberState(row["status"], int(row["scur"] or 0))
        for row in csv.DictReader(table)
        if row["pxname"] == proxy and row["svname"] not in ("FRONTEND", "BACKEND")
    }

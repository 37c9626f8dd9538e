"""The `ha` topology's PostgreSQL, natively: three Patroni members (each its own PostgreSQL) with a
three-member etcd as their store, and HAProxy on POSTGRES_PORT sending every client to the leader
(checked on Patroni's REST API). Every member listens on 127.0.0.1, on the ports `cluster_members`
lays out from MLSTACK_HA_PORT_BASE.

Replication is synchronous: a commit returns once the leader and one replica hold it, and Patroni
promotes only that replica, so a committed write survives the loss of the leader
(docs/scale-out.md states the trade-off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from mlstack.health import http_ok
from mlstack.settings import Settings
from mlstack.stacks.mlflow import POSTGRES_MEMBERS

#: Patroni's cluster name (its key prefix in etcd).
SCOPE = "mlstack"
REPLICATION_USER = "replicator"
#: Seconds without the leader's heartbeat before a replica takes over, and Patroni's loop; together
#: with HAProxy's checks (a second apart, down after two) they make a failover take ~20 s (drills).
LEADER_TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 2, 3
CHECK = "inter 1s fall 2 rise 2"
#: The ports `cluster_members` lays out from MLSTACK_HA_PORT_BASE.
HA_PORT_COUNT = 4 * POSTGRES_MEMBERS


@dataclass(frozen=True)
class Member:
    """One member of the cluster: its etcd (client and peer ports) and its Patroni (REST API and
    PostgreSQL ports); `number` counts from 1, as the service names do."""

    number: int
    etcd_client: int
    etcd_peer: int
    rest: int
    postgres: int

    @property
    def etcd(self) -> str:
        return f"etcd-{self.number}"

    @property
    def patroni(self) -> str:
        return f"postgres-{self.number}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_client}"

    def etcd_healthy(self) -> bool:
        """This etcd member answers and the cluster has a leader (a quorum)."""
        return http_ok(f"{self.etcd_url}/health")

    def patroni_healthy(self) -> bool:
        """This member's PostgreSQL runs (as leader or replica), by its Patroni."""
        return http_ok(f"http://127.0.0.1:{self.rest}/health")


def cluster_members(settings: Settings) -> tuple[Member, ...]:
    """From MLSTACK_HA_PORT_BASE up: the etcd client ports, the etcd peer ports, the Patroni REST ports,
    the PostgreSQL ports (POSTGRES_MEMBERS each: HA_PORT_COUNT in all)."""
    base = settings.ha_port_base
    return tuple(
        Member(
            n,
            base + n - 1,
            base + POSTGRES_MEMBERS + n - 1,
            base + 2 * POSTGRES_MEMBERS + n - 1,
            base + 3 * POSTGRES_MEMBERS + n - 1,
        )
        for n in range(1, POSTGRES_MEMBERS + 1)
    )


def etcd_command(etcd: Path, settings: Settings, member: Member, data: Path) -> list[str]:
    peers = ",".join(f"{other.etcd}=http://127.0.0.1:{other.etcd_peer}" for other in cluster_members(settings))
    client, peer = member.etcd_url, f"http://127.0.0.1:{member.etcd_peer}"
    return [
        str(etcd),
        *("--name", member.etcd, "--data-dir", str(data)),
        *("--listen-client-urls", client, "--advertise-client-urls", client),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", peers, "--initial-cluster-state", "new", "--initial-cluster-token", SCOPE),
    ]


def patroni_config(settings: Settings, member: Member, home: Path, postgres_bin: Path) -> dict[str, Any]:
    """Patroni's configuration of `member`, its data and files under `home`."""
    hosts = ",".join(f"127.0.0.1:{other.etcd_client}" for other in cluster_members(settings))
    password = settings.postgres_replication_password.get_secret_value()
    return {
        "scope": SCOPE,
        "name": member.patroni,
        "restapi": {"listen": f"127.0.0.1:{member.rest}", "connect_address": f"127.0.0.1:{member.rest}"},
        "etcd3": {"hosts": hosts},
        "bootstrap": {
            "dcs": {
                "ttl": LEADER_TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "synchronous_mode": True,
                "postgresql": {"use_pg_rewind": True, "parameters": {"wal_log_hints": "on"}},
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{member.postgres}",
            "connect_address": f"127.0.0.1:{member.postgres}",
            "data_dir": str(home / "data"),
            "bin_dir": str(postgres_bin),
            "pgpass": str(home / "pgpass"),
            "authentication": {
                "superuser": {
                    "username": settings.postgres_user,
                    "password": settings.postgres_password.get_secret_value(),
                },
                "replication": {"username": REPLICATION_USER, "password": password},
            },
            # TCP only, as the single topology's server: no socket file whose path could be too long
            "parameters": {"unix_socket_directories": ""},
            "pg_hba": [
                f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256",
                "host all all 127.0.0.1/32 scram-sha-256",
            ],
        },
    }


def haproxy_config(settings: Settings) -> str:
    """HAProxy on POSTGRES_PORT: each connection to the member whose Patroni answers /primary (the
    leader); a member marked down has its connections cut, so clients reconnect to the new leader."""
    servers = "".join(
        f"  server {member.patroni} 127.0.0.1:{member.postgres} check port {member.rest}\n"
        for member in cluster_members(settings)
    )
    return (
        "global\n  maxconn 2000\n"
        "defaults\n  mode tcp\n  timeout connect 4s\n  timeout client 30m\n  timeout server 30m\n  timeout check 2s\n"
        f"listen postgres\n  bind {settings.bind_address}:{settings.postgres_port}\n"
        "  option httpchk\n  http-check send meth GET uri /primary\n  http-check expect status 200\n"
        f"  default-server {CHECK} on-marked-down shutdown-sessions\n{servers}"
    )


def cluster_state(settings: Settings) -> list[dict[str, Any]] | None:
    """Patroni's view of the cluster (each member's name, role, state and replication lag), from the
    first member that answers; None when none does."""
    for member in cluster_members(settings):
        try:
            with urlopen(f"http://127.0.0.1:{member.rest}/cluster", timeout=2) as answer:
                return json.load(answer)["members"]
        except (URLError, OSError, ValueError, KeyError):
            continue
    return None


def describe(state: dict[str, Any]) -> str:
    """One member as status shows it: role, state and, for a replica, its lag behind the leader."""
    role = state.get("role", "?").replace("_", " ")
    lag = state.get("lag")
    behind = f", {lag} bytes behind" if isinstance(lag, int) else ""
    return f"{role} ({state.get('state', '?')}{behind})"

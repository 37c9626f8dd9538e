"""The `ha` topology's PostgreSQL, natively: three Patroni members (each its own PostgreSQL) with a
three-member etcd as their store, and HAProxy on POSTGRES_PORT sending every client to the leader
(checked on Patroni's REST API). Every member listens on its address (127.0.0.1 unless given), on
the ports `cluster_members` lays out from MLSTACK_HA_PORT_BASE.

Replication is synchronous: a commit returns once the leader and one replica hold it, and Patroni
promotes only that replica, so a committed write survives the loss of the leader
(docs/scale-out.md states the trade-off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from mlstack.health import http_ok
from mlstack.runtime.native.ha_ports import POSTGRES_BLOCK
from mlstack.runtime.native.haproxy import Backend, haproxy_config
from mlstack.settings import Settings
from mlstack.stacks.mlflow import POSTGRES_MEMBERS

#: Patroni's cluster name (its key prefix in etcd).
SCOPE = "mlstack"
REPLICATION_USER = "replicator"
#: Seconds without the leader's heartbeat before a replica takes over (Patroni's least: it raises a
#: smaller ttl to 20), and Patroni's loop; with HAProxy's checks (haproxy.CHECK) a failover takes
#: ~20 s (drills).
LEADER_TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 2, 3
#: Where the members of one machine listen.
LOCAL = "127.0.0.1"


@dataclass(frozen=True)
class Member:
    """One member of the cluster: its etcd (client and peer ports) and its Patroni (REST API and
    PostgreSQL ports), all on `address`; `number` counts from 1, as the service names do."""

    number: int
    etcd_client: int
    etcd_peer: int
    rest: int
    postgres: int
    address: str = LOCAL

    @property
    def etcd(self) -> str:
        return f"etcd-{self.number}"

    @property
    def patroni(self) -> str:
        return f"postgres-{self.number}"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.address}:{self.etcd_client}"

    @property
    def etcd_peer_url(self) -> str:
        return f"http://{self.address}:{self.etcd_peer}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.address}:{self.rest}"

    def etcd_healthy(self) -> bool:
        """This etcd member answers and the cluster has a leader (a quorum)."""
        return http_ok(f"{self.etcd_url}/health")

    def patroni_healthy(self) -> bool:
        """This member's PostgreSQL runs (as leader or replica), by its Patroni."""
        return http_ok(f"{self.rest_url}/health")


def cluster_members(settings: Settings, addresses: tuple[str, ...] = (LOCAL,) * POSTGRES_MEMBERS) -> tuple[Member, ...]:
    """In the group's block of ports (ha_ports): the etcd client ports, the etcd peer ports, the Patroni
    REST ports, the PostgreSQL ports (POSTGRES_MEMBERS each); member n on `addresses[n - 1]`."""
    base = settings.ha_port_base + POSTGRES_BLOCK[0]
    return tuple(
        Member(
            n,
            base + n - 1,
            base + POSTGRES_MEMBERS + n - 1,
            base + 2 * POSTGRES_MEMBERS + n - 1,
            base + 3 * POSTGRES_MEMBERS + n - 1,
            address,
        )
        for n, address in zip(range(1, POSTGRES_MEMBERS + 1), addresses, strict=True)
    )


def members_network(members: tuple[Member, ...]) -> str:
    """The smallest network holding every member's address: pg_hba's, for the members' replication
    and for HAProxy and clients beside them."""
    addresses = [ip_address(member.address) for member in members]
    network = ip_network(addresses[0])
    while not all(address in network for address in addresses):
        network = network.supernet()
    return str(network)


def etcd_command(
    etcd: Path, settings: Settings, member: Member, data: Path, members: tuple[Member, ...] | None = None
) -> list[str]:
    """etcd `member` of `members` (default: cluster_members(settings)), its data in `data`."""
    members = members or cluster_members(settings)
    peers = ",".join(f"{other.etcd}={other.etcd_peer_url}" for other in members)
    client, peer = member.etcd_url, member.etcd_peer_url
    return [
        str(etcd),
        *("--name", member.etcd, "--data-dir", str(data)),
        *("--listen-client-urls", client, "--advertise-client-urls", client),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", peers, "--initial-cluster-state", "new", "--initial-cluster-token", SCOPE),
    ]


def patroni_config(
    settings: Settings, member: Member, home: Path, postgres_bin: Path, members: tuple[Member, ...] | None = None
) -> dict[str, Any]:
    """Patroni's configuration of `member` of `members` (default: cluster_members(settings)), its data
    and files under `home`."""
    members = members or cluster_members(settings)
    hosts = ",".join(f"{other.address}:{other.etcd_client}" for other in members)
    network = members_network(members)
    password = settings.postgres_replication_password.get_secret_value()
    return {
        "scope": SCOPE,
        "name": member.patroni,
        "restapi": {"listen": f"{member.address}:{member.rest}", "connect_address": f"{member.address}:{member.rest}"},
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
            "listen": f"{member.address}:{member.postgres}",
            "connect_address": f"{member.address}:{member.postgres}",
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
                f"host replication {REPLICATION_USER} {network} scram-sha-256",
                f"host all all {network} scram-sha-256",
            ],
        },
    }


def postgres_proxy_config(
    settings: Settings, members: tuple[Member, ...] | None = None, admin_socket: Path | None = None
) -> str:
    """HAProxy on POSTGRES_PORT: each connection to the member of `members` (default:
    cluster_members(settings)) whose Patroni answers /primary (the leader)."""
    members = members or cluster_members(settings)
    backends = tuple(Backend(m.patroni, m.postgres, m.rest, m.address) for m in members)
    return haproxy_config(
        "postgres",
        settings.bind_address,
        settings.postgres_port,
        backends,
        "/primary",
        tcp=True,
        admin_socket=admin_socket,
    )


def cluster_state(settings: Settings, members: tuple[Member, ...] | None = None) -> list[dict[str, Any]] | None:
    """Patroni's view of the cluster (each member's name, role, state and replication lag), from the
    first of `members` (default: cluster_members(settings)) that answers; None when none does."""
    for member in members or cluster_members(settings):
        try:
            with urlopen(f"{member.rest_url}/cluster", timeout=2) as answer:
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

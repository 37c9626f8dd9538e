"""The `ha` topology's SeaweedFS, natively: three masters agreeing by Raft on who leads, three volume
servers keeping every volume on two of them, two filers each with its S3 gateway, and HAProxy on
S3_PORT over the gateways. Every member listens on 127.0.0.1, on the ports `cluster_nodes` lays out
from MLSTACK_HA_PORT_BASE (ha_ports.SEAWEEDFS_BLOCK).

- Masters: a leader while 2 of 3 answer; a new one elected when the leader dies.
- Volumes: `-defaultReplication=001` on the masters, a second copy on another server of the same rack
  (all servers of one machine share its rack), so every object survives the loss of one server;
  writes go on to volumes the master grows on the two left.
- Filers: each its own embedded store (leveldb2), kept in step with the other's by SeaweedFS's peer
  metadata sync (filer.MetaAggregator: every filer replays its peers' metadata changes; a new filer
  first copies the oldest peer's tree), so either filer holds every object's metadata.
- S3: HAProxy in TCP mode (the clients' signatures reach a gateway intact) sends every connection to
  the first gateway answering /healthz, the second only while the first is down: each gateway writes
  through its own filer, and one gateway at a time reads its own writes at once.

Security is the single topology's (seaweedfs.py): S3 identities from .env, one security.toml with the
JWT signing keys and the mutual-TLS certificates of every gRPC side, shared by all the processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mlstack.health import http_ok
from mlstack.runtime.native.ha_ports import SEAWEEDFS_BLOCK
from mlstack.runtime.native.haproxy import Backend, haproxy_config
from mlstack.runtime.native.seaweedfs import (
    GRPC_OFFSET,
    IDENTITIES,
    MAX_VOLUMES,
    S3_CATALOGS_OFF,
    VOLUME_SIZE_LIMIT_MB,
)
from mlstack.settings import Settings
from mlstack.stacks.mlflow import MLFLOW_HA_STACK, SEAWEEDFS_FILERS, SEAWEEDFS_MASTERS, SEAWEEDFS_VOLUMES

#: A second copy of every volume on another server of the same rack and data center.
REPLICATION = "001"
#: Seconds a stopping volume server waits after its last heartbeat (default 10): enough for the master
#: to send writes elsewhere, short enough for `mlstack down` to stop three of them.
VOLUME_PRE_STOP_SECONDS = 2


@dataclass(frozen=True)
class Node:
    """One weed process: its service name, HTTP, gRPC and metrics ports; with a filer, its S3
    gateway's HTTP and gRPC ports."""

    service: str
    port: int
    grpc: int
    metrics: int
    s3: int | None = None
    s3_grpc: int | None = None

    @property
    def role(self) -> str:
        """master, volume or filer."""
        return self.service.split("-")[1]

    @property
    def address(self) -> str:
        """SeaweedFS's name of this server with its own gRPC port (`ip:port.grpcPort`)."""
        return f"127.0.0.1:{self.port}.{self.grpc}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        """Its health check answers (the definition's path); a filer's S3 gateway too."""
        ok = http_ok(f"{self.url}{MLFLOW_HA_STACK[self.service].health}")
        return ok and (self.s3 is None or http_ok(f"http://127.0.0.1:{self.s3}/healthz"))


@dataclass(frozen=True)
class Cluster:
    masters: tuple[Node, ...]
    volumes: tuple[Node, ...]
    filers: tuple[Node, ...]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (*self.masters, *self.volumes, *self.filers)

    @property
    def master_list(self) -> str:
        """The masters as every weed process is given them (`-peers`, `-master`)."""
        return ",".join(master.address for master in self.masters)


def cluster_nodes(settings: Settings) -> Cluster:
    """In the group's block of ports (ha_ports), in this order: the masters' HTTP then gRPC ports, the
    volume servers' HTTP then gRPC ports, the filers' HTTP ports, the S3 gateways' HTTP then gRPC
    ports, the metrics ports of masters, volume servers and filers. A filer's gRPC port is its HTTP
    port + GRPC_OFFSET, outside the block: SeaweedFS 4.48's gateway inside `weed filer -s3` dials its
    filer there, whatever the filer's `-port.grpc`."""
    first = settings.ha_port_base + SEAWEEDFS_BLOCK[0]
    counts = (SEAWEEDFS_MASTERS,) * 2 + (SEAWEEDFS_VOLUMES,) * 2 + (SEAWEEDFS_FILERS,) * 3
    counts += (SEAWEEDFS_MASTERS, SEAWEEDFS_VOLUMES, SEAWEEDFS_FILERS)
    runs = []
    for count in counts:
        runs.append(range(first, first + count))
        first += count
    masters, master_grpc, volumes, volume_grpc, filers, s3, s3_grpc, *metrics = runs

    def nodes(role: str, http: range, grpc: list[int], metrics: range, *gateway: range) -> tuple[Node, ...]:
        return tuple(
            Node(f"seaweedfs-{role}-{n + 1}", http[n], grpc[n], metrics[n], *(ports[n] for ports in gateway))
            for n in range(len(http))
        )

    return Cluster(
        nodes("master", masters, master_grpc, metrics[0]),
        nodes("volume", volumes, volume_grpc, metrics[1]),
        nodes("filer", filers, [port + GRPC_OFFSET for port in filers], metrics[2], s3, s3_grpc),
    )


def _common(node: Node, weed: Path, role: str) -> list[str]:
    return [
        str(weed),
        role,
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-port={node.port}",
        f"-port.grpc={node.grpc}",
        "-metricsIp=127.0.0.1",
        f"-metricsPort={node.metrics}",
    ]


def master_command(settings: Settings, weed: Path, master: Node, data: Path) -> list[str]:
    """A master of the Raft group of all three; it sets the replication of every new volume."""
    return [
        *_common(master, weed, "master"),
        f"-mdir={data}",
        f"-peers={cluster_nodes(settings).master_list}",
        f"-defaultReplication={REPLICATION}",
        f"-volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        "-telemetry=false",
    ]


def volume_command(settings: Settings, weed: Path, volume: Node, data: Path) -> list[str]:
    return [
        *_common(volume, weed, "volume"),
        f"-dir={data}",
        f"-max={MAX_VOLUMES}",
        f"-master={cluster_nodes(settings).master_list}",
        f"-preStopSeconds={VOLUME_PRE_STOP_SECONDS}",
    ]


def filer_command(settings: Settings, weed: Path, filer: Node, data: Path, config: Path) -> list[str]:
    """A filer with its embedded store in `data` and its S3 gateway (identities: `gateway_identities`)."""
    return [
        *_common(filer, weed, "filer"),
        f"-master={cluster_nodes(settings).master_list}",
        f"-defaultStoreDir={data}",
        "-s3",
        f"-s3.port={filer.s3}",
        f"-s3.port.grpc={filer.s3_grpc}",
        "-s3.ip.bind=127.0.0.1",
        f"-s3.config={config / gateway_identities(filer)}",
        *S3_CATALOGS_OFF,
    ]


def node_command(settings: Settings, weed: Path, node: Node, data: Path, config: Path) -> list[str]:
    """`node`'s command line by its role, its data in `data`; run it in `config` (security.toml)."""
    if node.role == "filer":
        return filer_command(settings, weed, node, data, config)
    return {"master": master_command, "volume": volume_command}[node.role](settings, weed, node, data)


def gateway_identities(filer: Node) -> str:
    """The file in the config folder holding the identities `filer`'s gateway started with: one per
    gateway, so each one restarts when .env's identities changed since its own start."""
    return f"{filer.service}-{IDENTITIES}"


def seaweedfs_proxy_config(settings: Settings) -> str:
    """HAProxy on S3_PORT (TCP): each connection to the first gateway answering /healthz; one that
    cannot connect there (the gateway died, not yet marked down) is sent to the other."""
    backends = tuple(Backend(f.service, f.s3, f.s3) for f in cluster_nodes(settings).filers)
    return haproxy_config(
        "seaweedfs",
        settings.bind_address,
        settings.s3_port,
        backends,
        "/healthz",
        tcp=True,
        extra="  balance first\n  option redispatch\n  retries 2\n",
    )


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        answer = requests.get(url, timeout=2)
        return answer.json() if answer.ok else None
    except (requests.RequestException, ValueError):
        return None


def master_leader(settings: Settings) -> Node | None:
    """The master the Raft group elected, as the first master answering says; None when none does."""
    masters = cluster_nodes(settings).masters
    for master in masters:
        status = _get_json(f"{master.url}/cluster/status")
        if status and status.get("Leader"):
            return next((m for m in masters if m.address == status["Leader"]), None)
    return None


def volume_servers(leader: Node | None) -> dict[str, int]:
    """The volume servers (`ip:port`) the master `leader` counts as alive, and how many volumes each holds."""
    status = _get_json(f"{leader.url}/dir/status") if leader else None
    if not status:
        return {}
    return {
        node["Url"]: node["Volumes"]
        for center in status["Topology"]["DataCenters"] or []
        for rack in center["Racks"] or []
        for node in rack["DataNodes"] or []
    }


def describe_proxy(settings: Settings, leader: Node | None) -> str:
    """status's `seaweedfs` line: HAProxy over the gateways, the master leader, the volume servers up."""
    gateways = ", ".join(filer.service for filer in cluster_nodes(settings).filers)
    return (
        f"HAProxy over the S3 gateways of {gateways}; master leader {leader.service if leader else 'none elected'}; "
        f"{len(volume_servers(leader))} of {SEAWEEDFS_VOLUMES} volume servers up, replication {REPLICATION}"
    )


def describe(node: Node, leader: Node | None) -> str:
    """One member as status shows it: a master's Raft role, a filer's S3 gateway."""
    if node.role == "master":
        return "Raft leader" if node == leader else "Raft follower"
    if node.role == "filer":
        return f"S3 gateway on 127.0.0.1:{node.s3}"
    return "volume server"

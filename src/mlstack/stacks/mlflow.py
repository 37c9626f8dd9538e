"""The MLflow stack: PostgreSQL (backend store and the auth app's users), SeaweedFS (artifacts, over
S3), the tracking server, and its optional TLS front; for a stack made before SeaweedFS, the MinIO
that holds its old artifacts and the step that moves them. infra/mlflow/compose.yaml runs the same.

MLSTACK_TOPOLOGY=ha (`mlflow_stack`) replaces each of the three stateful or serving services with a
group of members and HAProxy under the service's own name and port, so every client reaches the
group where it reached the one service (docs/scale-out.md):
- `postgres`: three etcd members, three Patroni members (HAProxy sends to the leader);
- `seaweedfs`: three masters (Raft), three volume servers (every volume on two of them), two filers
  each with its S3 gateway (HAProxy spreads S3 requests over both);
- `mlflow`: two tracking servers (HAProxy spreads requests over both)."""

from dataclasses import replace

from mlstack.settings import Topology
from mlstack.stacks import Port, Service, Stack

#: Our images (services/): the bootstrap steps (the `mlstack` CLI) and the tracking server with the store plugin.
BOOTSTRAP_IMAGE = "mlstack/bootstrap:0.2.2"
SERVER_IMAGE = "mlstack/mlflow-server:3.17.2-mlstack.7"
#: The last community MinIO image: read-only source of the move to SeaweedFS (mlstack.maintenance.minio_move).
MINIO_IMAGE = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
#: ha: the versions of the Debian packages (etcd-server, haproxy) and of Patroni on PyPI the native runtime
#: runs, and how many members each group has.
ETCD_IMAGE = "quay.io/coreos/etcd:v3.4.23"
PATRONI_IMAGE = "mlstack/patroni:4.1.5-pg15"
HAPROXY_IMAGE = "haproxy:2.6.12"
POSTGRES_MEMBERS = 3
SEAWEEDFS_MASTERS, SEAWEEDFS_VOLUMES, SEAWEEDFS_FILERS = 3, 3, 2
MLFLOW_REPLICAS = 2
#: Monitoring: the versions of Debian's prometheus, prometheus-alertmanager and
#: prometheus-postgres-exporter the native runtime runs; Grafana runs in compose only.
PROMETHEUS_IMAGE = "prom/prometheus:v2.42.0"
ALERTMANAGER_IMAGE = "prom/alertmanager:v0.25.0"
POSTGRES_EXPORTER_IMAGE = "quay.io/prometheuscommunity/postgres-exporter:v0.11.1"
GRAFANA_IMAGE = "grafana/grafana:11.6.1"
#: Where Prometheus scrapes each service inside the compose network (SeaweedFS: its -metricsPort; the
#: tracking server: MLSTACK_METRICS_ADDRESS, which `mlstack up` sets with monitoring on).
METRICS_PORTS = {
    "prometheus": 9090,
    "alertmanager": 9093,
    "postgres-exporter": 9187,
    "mlstack-exporter": 9188,
    "mlflow": 9189,
    "seaweedfs": 9336,
}

MLFLOW_STACK = Stack(
    "mlflow",
    (
        # refuses placeholder or missing secrets before anything starts
        Service("preflight", BOOTSTRAP_IMAGE, one_shot=True),
        Service(
            "postgres",
            "postgres:15-bookworm",
            waits_for=("preflight",),
            ports=(Port("POSTGRES_PORT", 5432),),
            health="postgres",
            data=("postgres-data",),
        ),
        Service(
            "seaweedfs",
            "chrislusf/seaweedfs:4.48",
            waits_for=("preflight",),
            ports=(Port("S3_PORT", 8333),),
            health="/healthz",
            data=("seaweedfs-data",),
        ),
        # the artifact bucket (as the store's admin), and a check that the server's identity works in it
        Service("storage-bootstrap", BOOTSTRAP_IMAGE, waits_for=("seaweedfs",), one_shot=True),
        # A stack made before SeaweedFS: its MinIO, and the step copying every object over, verified
        # (on while the state folder has no record of a finished move).
        Service(
            "minio",
            MINIO_IMAGE,
            waits_for=("preflight",),
            health="/minio/health/live",
            data=("minio-data",),
            profile="minio-move",
        ),
        Service(
            "minio-move", BOOTSTRAP_IMAGE, waits_for=("minio", "storage-bootstrap"), one_shot=True, profile="minio-move"
        ),
        # the server's database role and the auth app's database
        Service("database-bootstrap", BOOTSTRAP_IMAGE, waits_for=("postgres",), one_shot=True),
        # `mlflow db upgrade`
        Service("migrate", SERVER_IMAGE, waits_for=("database-bootstrap",), one_shot=True),
        Service(
            "mlflow",
            SERVER_IMAGE,
            waits_for=("postgres", "seaweedfs", "migrate", "storage-bootstrap", "minio-move"),
            ports=(Port("MLFLOW_PORT", 5000),),
            health="/health",
        ),
        Service(
            "tls-proxy",
            "caddy:2.6.2-alpine",
            waits_for=("mlflow",),
            ports=(Port("MLFLOW_TLS_PORT", 5443),),
            health="/health",
            profile="tls",
        ),
        # Monitoring (MLSTACK_MONITORING=true; docs/operations.md): Prometheus' and Alertmanager's
        # configurations made from this definition, the exporters (reached by Prometheus only: compose
        # publishes no port of theirs), Alertmanager, Prometheus; Grafana with the dashboards in compose
        # only (profile dashboards, on with monitoring there).
        Service(
            "monitoring-config",
            BOOTSTRAP_IMAGE,
            waits_for=("preflight",),
            data=("monitoring-config",),
            one_shot=True,
            profile="monitoring",
        ),
        Service(
            "postgres-exporter",
            POSTGRES_EXPORTER_IMAGE,
            waits_for=("database-bootstrap",),
            health="/metrics",
            profile="monitoring",
        ),
        Service(
            "mlstack-exporter",
            BOOTSTRAP_IMAGE,
            waits_for=("database-bootstrap", "storage-bootstrap"),
            health="/metrics",
            profile="monitoring",
        ),
        Service(
            "alertmanager",
            ALERTMANAGER_IMAGE,
            waits_for=("monitoring-config",),
            ports=(Port("ALERTMANAGER_PORT", 9093),),
            health="/-/ready",
            data=("monitoring-config", "alertmanager-data"),
            profile="monitoring",
        ),
        Service(
            "prometheus",
            PROMETHEUS_IMAGE,
            waits_for=("monitoring-config", "alertmanager"),
            ports=(Port("PROMETHEUS_PORT", 9090),),
            health="/-/ready",
            data=("monitoring-config", "prometheus-data"),
            profile="monitoring",
        ),
        Service(
            "grafana",
            GRAFANA_IMAGE,
            waits_for=("prometheus",),
            ports=(Port("GRAFANA_PORT", 3000),),
            health="/api/health",
            data=("grafana-data",),
            profile="dashboards",
        ),
    ),
)


def _behind_proxy(single: Service, members: tuple[Service, ...]) -> Service:
    """HAProxy in the single service's place: its name, port and health check, in front of `members`."""
    return replace(single, image=HAPROXY_IMAGE, waits_for=tuple(member.name for member in members), data=())


def _postgres_cluster(single: Service) -> tuple[Service, ...]:
    """etcd-N and postgres-N (Patroni), then HAProxy as `postgres`, to the leader."""
    etcd = tuple(
        Service(f"etcd-{n}", ETCD_IMAGE, waits_for=single.waits_for, health="/health", data=(f"etcd-{n}-data",))
        for n in range(1, POSTGRES_MEMBERS + 1)
    )
    members = tuple(
        Service(
            f"postgres-{n}",
            PATRONI_IMAGE,
            waits_for=tuple(service.name for service in etcd),
            health="/health",
            data=(f"postgres-{n}-data",),
        )
        for n in range(1, POSTGRES_MEMBERS + 1)
    )
    return (*etcd, *members, _behind_proxy(single, members))


def _seaweedfs_cluster(single: Service) -> tuple[Service, ...]:
    """seaweedfs-master-N (Raft), seaweedfs-volume-N, seaweedfs-filer-N (each with its S3 gateway), then
    HAProxy as `seaweedfs`, over the gateways."""

    def group(role: str, count: int, waits_for: tuple[str, ...], health: str) -> tuple[Service, ...]:
        return tuple(
            Service(
                f"seaweedfs-{role}-{n}",
                single.image,
                waits_for=waits_for,
                health=health,
                data=(f"seaweedfs-{role}-{n}-data",),
            )
            for n in range(1, count + 1)
        )

    masters = group("master", SEAWEEDFS_MASTERS, single.waits_for, "/cluster/healthz")
    volumes = group("volume", SEAWEEDFS_VOLUMES, tuple(m.name for m in masters), "/healthz")
    filers = group("filer", SEAWEEDFS_FILERS, tuple(v.name for v in volumes), "/healthz")
    return (*masters, *volumes, *filers, _behind_proxy(single, filers))


def _mlflow_replicas(single: Service) -> tuple[Service, ...]:
    """mlflow-N, each the single server as it is, then HAProxy as `mlflow`, over them."""
    replicas = tuple(replace(single, name=f"mlflow-{n}", ports=()) for n in range(1, MLFLOW_REPLICAS + 1))
    return (*replicas, _behind_proxy(single, replicas))


#: The services the ha topology runs as a group behind HAProxy, and how it makes each group.
HA_GROUPS = {"postgres": _postgres_cluster, "seaweedfs": _seaweedfs_cluster, "mlflow": _mlflow_replicas}


def _ha(stack: Stack) -> Stack:
    services = []
    for service in stack.services:
        services += HA_GROUPS[service.name](service) if service.name in HA_GROUPS else (service,)
    return Stack(stack.name, tuple(services))


MLFLOW_HA_STACK = _ha(MLFLOW_STACK)


def mlflow_stack(topology: Topology) -> Stack:
    return MLFLOW_HA_STACK if topology == "ha" else MLFLOW_STACK

"""The ha topology's inner ports on the native runtime: MLSTACK_HA_PORT_BASE and up, one block for each
group of members (postgres_cluster, seaweedfs_cluster, the MLflow replicas), all on 127.0.0.1."""

#: Each group's first port, as an offset from MLSTACK_HA_PORT_BASE, and how many ports it may use.
POSTGRES_BLOCK = (0, 12)
SEAWEEDFS_BLOCK = (12, 28)
MLFLOW_BLOCK = (40, 8)
#: The ports from MLSTACK_HA_PORT_BASE up that the ha topology holds; beyond them, each SeaweedFS filer's gRPC
#: port is its HTTP port + seaweedfs.GRPC_OFFSET (SeaweedFS 4.48's gateway dials its filer there).
HA_PORT_COUNT = 48

"""The ha topology's SeaweedFS (mlstack.runtime.native.seaweedfs_cluster): where each member listens,
its command line, HAProxy's configuration, and the security files the members share."""

from __future__ import annotations

from pathlib import Path

from mlstack.runtime.native.ha_ports import SEAWEEDFS_BLOCK
from mlstack.runtime.native.seaweedfs import (
    GRPC_OFFSET,
    MAX_VOLUMES,
    SECURITY,
    VOLUME_SIZE_LIMIT_MB,
    identities_current,
    write_identities,
    write_security,
)
from mlstack.runtime.native.seaweedfs_cluster import (
    REPLICATION,
    cluster_nodes,
    gateway_identities,
    node_command,
    seaweedfs_proxy_config,
)
from mlstack.stacks.mlflow import MLFLOW_HA_STACK
from tests.conftest import EPHEMERAL_START, claim
from tests.unit.test_seaweedfs import flags

WEED = Path("/tools/weed")


def test_every_seaweedfs_member_of_the_definition_has_its_ports_in_the_block_and_none_shared(project):
    cluster = cluster_nodes(project)
    defined = [s.name for s in MLFLOW_HA_STACK.services if s.name.startswith("seaweedfs-")]
    assert [node.service for node in cluster.nodes] == defined, "the definition's names, in its start order"

    block = range(project.ha_port_base + SEAWEEDFS_BLOCK[0], project.ha_port_base + sum(SEAWEEDFS_BLOCK))
    inner = [port for node in cluster.nodes for port in (node.port, node.metrics, node.s3, node.s3_grpc) if port]
    inner += [node.grpc for node in (*cluster.masters, *cluster.volumes)]
    assert set(inner) <= set(block) and len(set(inner)) == len(inner)
    # 4.48's gateway in `weed filer -s3` dials its filer's gRPC at the SeaweedFS default, whatever -port.grpc
    assert all(filer.grpc == filer.port + GRPC_OFFSET for filer in cluster.filers)
    assert not set(inner) & {filer.grpc for filer in cluster.filers}


def test_a_scratch_projects_ha_ports_are_claimed_the_filers_grpc_ports_outside_the_block_too(project):
    """Every port the ha SeaweedFS of a scratch project listens on is claimed for it (tests.conftest), so
    no other test of the run is handed one, whichever xdist worker asks, and lies below the ephemeral
    range, where no client socket takes it before the member starts."""
    cluster = cluster_nodes(project)
    used = {port for node in cluster.nodes for port in (node.port, node.grpc, node.metrics, node.s3, node.s3_grpc)}
    used -= {None}
    assert all(not claim([port]) for port in used)
    assert max(used) < EPHEMERAL_START


def test_masters_form_one_raft_group_and_every_process_knows_all_three(project, tmp_path):
    cluster = cluster_nodes(project)
    masters = ",".join(f"127.0.0.1:{m.port}.{m.grpc}" for m in cluster.masters)
    for node in cluster.nodes:
        given = flags(node_command(project, WEED, node, tmp_path / node.service, tmp_path / "config"))
        assert given["ip"] == given["ip.bind"] == given["metricsIp"] == "127.0.0.1"
        assert (given["port"], given["port.grpc"], given["metricsPort"]) == tuple(
            map(str, (node.port, node.grpc, node.metrics))
        )
        assert given.get("peers" if node.role == "master" else "master") == masters


def test_volumes_keep_two_copies_and_room_for_every_bucket(project, tmp_path):
    cluster = cluster_nodes(project)
    master = flags(node_command(project, WEED, cluster.masters[0], tmp_path / "m", tmp_path / "config"))
    volume = flags(node_command(project, WEED, cluster.volumes[0], tmp_path / "v", tmp_path / "config"))
    assert master["defaultReplication"] == REPLICATION == "001", "a second copy on another server of the rack"
    assert master["volumeSizeLimitMB"] == str(VOLUME_SIZE_LIMIT_MB) and volume["max"] == str(MAX_VOLUMES)
    assert master["telemetry"] == "false", "no statistics leave the machine"
    assert master["mdir"] == str(tmp_path / "m") and volume["dir"] == str(tmp_path / "v")


def test_each_filer_has_its_own_store_and_gateway_on_loopback_with_its_own_identities(project, tmp_path):
    settings = project.model_copy(update={"bind_address": "0.0.0.0"})
    config = tmp_path / "config"
    filers = cluster_nodes(settings).filers
    given = [flags(node_command(settings, WEED, f, tmp_path / f.service, config)) for f in filers]
    for filer, flag in zip(filers, given, strict=True):
        assert "-s3" in node_command(settings, WEED, filer, tmp_path / filer.service, config)
        assert flag["defaultStoreDir"] == str(tmp_path / filer.service)
        assert (flag["s3.port"], flag["s3.port.grpc"]) == (str(filer.s3), str(filer.s3_grpc))
        assert flag["s3.ip.bind"] == "127.0.0.1", "clients reach the gateways through HAProxy only"
        assert flag["s3.port.iceberg"] == flag["s3.port.lance"] == "0"
        assert flag["s3.config"] == str(config / gateway_identities(filer))
    assert given[0]["s3.config"] != given[1]["s3.config"]


def test_haproxy_passes_s3_through_to_the_first_healthy_gateway_on_the_settings_port(project):
    settings = project.model_copy(update={"bind_address": "0.0.0.0"})
    config = seaweedfs_proxy_config(settings)
    assert f"bind 0.0.0.0:{settings.s3_port}\n" in config
    assert "mode tcp\n" in config, "S3 signatures pass intact"
    assert "uri /healthz\n" in config and "balance first\n" in config
    for filer in cluster_nodes(settings).filers:
        assert f"server {filer.service} 127.0.0.1:{filer.s3} check port {filer.s3}\n" in config


def test_the_members_share_one_security_file_and_a_gateways_identities_are_its_own(project, tmp_path):
    config = tmp_path / "config"
    first, second = cluster_nodes(project).filers
    write_security(config)
    security = (config / SECURITY).read_text()
    write_identities(project, config, gateway_identities(first))

    assert (config / SECURITY).read_text() == security, "a gateway's restart keeps the others' keys valid"
    assert identities_current(project, config, gateway_identities(first))
    assert not identities_current(project, config, gateway_identities(second)), "not started yet: it must start"
    rotated = project.model_copy(update={"mlflow_s3_access_key": "another-key"})
    assert not identities_current(rotated, config, gateway_identities(first)), "a changed key restarts it"

"""The ha topology's member definitions on addresses other than 127.0.0.1 (one member per machine, or
per network namespace in tests/integration/test_ha_partition.py): every URL, listen and connect
address, pg_hba rule and HAProxy backend follows the members' addresses; the ports do not change."""

from __future__ import annotations

from pathlib import Path

from mlstack.runtime.native.postgres_cluster import (
    cluster_members,
    etcd_command,
    members_network,
    patroni_config,
    postgres_proxy_config,
)

ADDRESSES = ("10.1.0.2", "10.1.0.6", "10.1.0.10")


def test_the_default_members_are_the_runtimes_on_loopback(project):
    members = cluster_members(project)
    assert {member.address for member in members} == {"127.0.0.1"}
    config = patroni_config(project, members[0], Path("/h"), Path("/bin"))
    assert config["postgresql"]["pg_hba"][-1] == "host all all 127.0.0.1/32 scram-sha-256"
    assert f"server postgres-1 127.0.0.1:{members[0].postgres} check port {members[0].rest}" in (
        postgres_proxy_config(project)
    )


def test_addressed_members_keep_the_ports_and_move_every_address(project):
    local, members = cluster_members(project), cluster_members(project, ADDRESSES)
    assert [(m.etcd_client, m.etcd_peer, m.rest, m.postgres) for m in members] == [
        (m.etcd_client, m.etcd_peer, m.rest, m.postgres) for m in local
    ]
    second = members[1]
    assert second.etcd_url == f"http://10.1.0.6:{second.etcd_client}"
    assert second.etcd_peer_url == f"http://10.1.0.6:{second.etcd_peer}"
    assert second.rest_url == f"http://10.1.0.6:{second.rest}"


def test_etcd_listens_advertises_and_knows_its_peers_on_their_addresses(project):
    members = cluster_members(project, ADDRESSES)
    command = etcd_command(Path("/usr/bin/etcd"), project, members[1], Path("/data"), members)
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--listen-client-urls"] == flags["--advertise-client-urls"] == members[1].etcd_url
    assert flags["--listen-peer-urls"] == flags["--initial-advertise-peer-urls"] == members[1].etcd_peer_url
    assert flags["--initial-cluster"] == ",".join(f"{m.etcd}={m.etcd_peer_url}" for m in members)
    assert "127.0.0.1" not in " ".join(command)


def test_patroni_listens_connects_and_admits_on_the_members_network(project):
    members = cluster_members(project, ADDRESSES)
    config = patroni_config(project, members[2], Path("/h"), Path("/bin"), members)
    assert config["restapi"] == {
        "listen": f"10.1.0.10:{members[2].rest}",
        "connect_address": f"10.1.0.10:{members[2].rest}",
    }
    assert (
        config["postgresql"]["listen"] == config["postgresql"]["connect_address"] == f"10.1.0.10:{members[2].postgres}"
    )
    assert config["etcd3"]["hosts"] == ",".join(f"{m.address}:{m.etcd_client}" for m in members)
    assert config["postgresql"]["pg_hba"] == [
        "host replication replicator 10.1.0.0/28 scram-sha-256",
        "host all all 10.1.0.0/28 scram-sha-256",
    ]


def test_the_members_network_is_the_smallest_holding_them_all(project):
    assert members_network(cluster_members(project, ADDRESSES)) == "10.1.0.0/28"
    assert members_network(cluster_members(project, ("192.168.5.20", "192.168.7.1", "192.168.4.9"))) == "192.168.4.0/22"


def test_haproxy_sends_to_each_members_address(project):
    members = cluster_members(project, ADDRESSES)
    config = postgres_proxy_config(project, members)
    for member in members:
        assert f"server {member.patroni} {member.address}:{member.postgres} check port {member.rest}\n" in config
    assert f"bind {project.bind_address}:{project.postgres_port}\n" in config

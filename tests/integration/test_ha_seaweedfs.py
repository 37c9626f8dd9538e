"""The ha topology's SeaweedFS (docs/scale-out.md) on a scratch native stack: `mlstack up` with
MLSTACK_TOPOLOGY=ha, then failover drills with real processes. While 4 training scripts log 50,000
points each and a client uploads artifacts, one volume server is SIGKILLed, and separately the master
leader: every artifact stored before stays downloadable, the uploads go on, nothing is lost, and
`mlstack up` brings the member back. A filer is SIGKILLed: every object stays listed and readable
through the other gateway, and the filer catches up on what was written without it. Each drill prints
what it sent, what landed, how long a plain S3 client saw the store fail and when it recovered."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from mlstack.bootstrap.storage import s3_client
from mlstack.runtime.native.seaweedfs_cluster import cluster_nodes, master_leader, volume_servers
from mlstack.stacks.mlflow import SEAWEEDFS_VOLUMES
from tests.conftest import run_mlstack
from tests.ha_drills import Availability, Workload, ha_stack, wait_for

pytestmark = pytest.mark.integration

PROBE_BUCKET = "ha-drill-probe"


@pytest.fixture(scope="module")
def stack():
    with ha_stack("mlstack-ha-s3-") as stack:
        stack.s3.create_bucket(Bucket=PROBE_BUCKET)
        # a fresh store makes a bucket's volumes on its first write, which could outlast the drills'
        # training scripts: written once here, before any drill
        stack.s3.put_object(Bucket=stack.bucket, Key="before-the-drills", Body=b"first write")
        yield stack


@dataclass
class S3Availability(Availability):
    """A plain S3 client on `url` with the identity `auth`, without boto3's retries (every failure
    counts), writing a small object and reading it back every 0.2 s."""

    def __post_init__(self) -> None:
        self.client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.auth[0],
            aws_secret_access_key=self.auth[1],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=5),
        )

    def answered(self) -> bool:
        key, body = f"probe/{uuid.uuid4().hex}", uuid.uuid4().bytes
        try:
            self.client.put_object(Bucket=PROBE_BUCKET, Key=key, Body=body)
            return self.client.get_object(Bucket=PROBE_BUCKET, Key=key)["Body"].read() == body
        except (BotoCoreError, ClientError):
            return False


def objects(client, bucket: str) -> dict[str, bytes]:
    """Every object of `bucket`, read whole."""
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def drill(stack, workload: Workload, killed: str, recovered) -> str:
    """SIGKILL `killed` while `workload` and an S3 probe run; wait until `recovered()`; with `killed`
    still down, check the workload (every point and artifact landed once, each artifact downloads
    whole, some uploaded after the kill) and that every object stored before the kill reads back the
    same; then `mlstack up`. What the drill prints."""
    settings = stack.settings
    before = objects(stack.s3, stack.bucket)
    probe = S3Availability(
        settings.s3_url, (settings.s3_admin_access_key, settings.s3_admin_secret_key.get_secret_value())
    )
    prober = threading.Thread(target=probe.run)
    prober.start()
    uploaded_before = len(workload.sent)
    workload.hit(lambda: stack.runtime.kill(killed))
    killed_at = workload.fault_at
    wait_for(f"the cluster to recover from the loss of {killed}", recovered)
    outcome = workload.finish()
    probe.stop.set()
    prober.join()
    assert uploaded_before < len(workload.sent), "uploads went on after the kill"
    assert not stack.runtime.processes[killed].is_running(), "checked while the member was down"
    after = objects(stack.s3, stack.bucket)
    assert {key: after.get(key) for key in before} == before, "every object stored before the kill, whole"

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    back = (probe.recovered or killed_at) - killed_at
    return (
        f"{outcome}; a plain S3 client saw {probe.unavailable_seconds:.1f} s of failures "
        f"({len(probe.failures)} failed write+read pairs), answered again {back:.1f} s after the kill; "
        f"{len(before)} objects stored before the kill all read back"
    )


def test_sigkill_of_a_volume_server_keeps_every_artifact_and_uploads_go_on(stack, tmp_path, drill_report, monkeypatch):
    settings = stack.settings
    workload = Workload(stack, "ha-drill-volume", tmp_path).start(monkeypatch)
    holding = volume_servers(master_leader(settings))
    assert len(holding) == SEAWEEDFS_VOLUMES, holding
    busiest = max(holding, key=holding.get)
    killed = next(v.service for v in cluster_nodes(settings).volumes if v.url == f"http://{busiest}")

    def counted_gone() -> bool:
        alive = volume_servers(master_leader(settings))
        return len(alive) == SEAWEEDFS_VOLUMES - 1 and busiest not in alive

    outcome = drill(stack, workload, killed, counted_gone)
    wait_for(f"{killed} back in the topology", lambda: busiest in volume_servers(master_leader(settings)))
    drill_report(f"[drill: SeaweedFS volume server SIGKILL] {killed} (held {holding[busiest]} volumes); {outcome}")
    status = run_mlstack(settings.project_dir, "status", "--stack", "mlflow")
    said = " ".join(status.stdout.replace("│", " ").split())  # a table cell's text, wrapped or not
    assert status.returncode == 0 and f"{SEAWEEDFS_VOLUMES} of {SEAWEEDFS_VOLUMES} volume servers up" in said, said


def test_sigkill_of_the_master_leader_keeps_every_artifact_and_uploads_go_on(
    stack, tmp_path, drill_report, monkeypatch
):
    settings = stack.settings
    killed = master_leader(settings)
    assert killed is not None
    workload = Workload(stack, "ha-drill-master", tmp_path).start(monkeypatch)

    def new_leader():
        leader = master_leader(settings)
        return leader if leader not in (None, killed) else None

    outcome = drill(stack, workload, killed.service, new_leader)
    elected = new_leader()
    wait_for(
        f"{killed.service} following {elected.service}", lambda: killed.healthy() and master_leader(settings) == elected
    )
    drill_report(f"[drill: SeaweedFS master leader SIGKILL] {killed.service} -> {elected.service}; {outcome}")


def test_a_filers_loss_keeps_every_object_readable_and_it_catches_up_on_its_return(stack, drill_report):
    settings = stack.settings
    first, second = cluster_nodes(settings).filers
    before = objects(stack.s3, stack.bucket)
    assert before, "the drills before stored artifacts"
    stack.runtime.kill(first.service)
    killed_at = time.monotonic()
    # through S3_PORT, HAProxy now sends every request to the other gateway, over the other filer's store
    assert objects(stack.s3, stack.bucket) == before
    stack.s3.put_object(Bucket=stack.bucket, Key="written-without-filer-1", Body=b"while filer-1 was down")
    served = time.monotonic() - killed_at

    up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
    assert up.returncode == 0, up.stdout + up.stderr
    own_gateway = s3_client(
        settings,
        settings.s3_admin_access_key,
        settings.s3_admin_secret_key.get_secret_value(),
        endpoint=f"http://127.0.0.1:{first.s3}",
    )
    expected = {**before, "written-without-filer-1": b"while filer-1 was down"}
    wait_for(f"{first.service} to hold every object again", lambda: objects(own_gateway, stack.bucket) == expected)
    stack.s3.delete_object(Bucket=stack.bucket, Key="written-without-filer-1")
    drill_report(
        f"[drill: SeaweedFS filer SIGKILL] {first.service}; {len(before)} objects listed and read whole "
        f"through {second.service}'s gateway within {served:.1f} s of the kill; back, {first.service} "
        f"holds them and the one written without it"
    )

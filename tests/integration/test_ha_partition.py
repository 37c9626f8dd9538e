"""Failover drill 5 of the ha topology's PostgreSQL: a real network partition. Each of the three members
(its etcd and its Patroni, configured by the runtime's own functions) runs in a network namespace of
its own, linked to this one by a veth pair and routed through it; HAProxy runs here. While a writer
here inserts through HAProxy and another, inside the leader's namespace, inserts into the leader
directly, the leader's link is cut: the other two elect a new leader, the old one stops taking writes
(never two members at once) and nothing acknowledged is lost; healed, the old leader rejoins as a
replica holding every acknowledged row. Skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_network
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from mlstack.envfile import update_env
from mlstack.errors import MissingToolError
from mlstack.runtime.native.postgres_cluster import (
    Member,
    cluster_members,
    cluster_state,
    etcd_command,
    patroni_config,
    postgres_proxy_config,
)
from mlstack.runtime.native.process import base_env
from mlstack.runtime.native.tools import NativeTools, find_tools
from mlstack.settings import Settings
from tests.conftest import REQUIRED_RUNTIME, make_project
from tests.ha_drills import wait_for

pytestmark = pytest.mark.integration

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
POSTGRES_OS_USER = "postgres"

#: Inserts numbered rows of `writer` into `drill`, one autocommit INSERT each, reconnecting after any
#: failure; prints each id it sends, each it got acknowledged (with the monotonic clock, which every
#: namespace shares) and each failure (its class; its text to stderr).
WRITER = """
    import os, sys, time
    import psycopg

    writer, number, connection = sys.argv[1], 0, None
    while True:
        try:
            if connection is None:
                connection = psycopg.connect(os.environ["DRILL_DSN"], autocommit=True, connect_timeout=2)
            number += 1
            print("sent", number, flush=True)
            connection.execute("INSERT INTO drill (writer, id) VALUES (%s, %s)", (writer, number))
            print("ack", number, time.monotonic(), flush=True)
            time.sleep(0.01)
        except psycopg.Error as error:
            print("fail", time.monotonic(), type(error).__name__, flush=True)
            print(" ".join(str(error).split()), file=sys.stderr, flush=True)
            if connection is not None:
                connection.close()
            connection = None
            time.sleep(0.1)
"""


@dataclass(frozen=True)
class Namespace:
    """A network namespace linked to this one by a veth pair: `link` is this side's end, at `gateway`;
    the namespace's end is at `address`, its default route via `gateway`."""

    name: str
    link: str
    gateway: str
    address: str

    def command(self, *command: str, as_postgres: bool = False) -> list[str]:
        """`command` run inside the namespace (as the `postgres` user with `as_postgres`)."""
        user = ("setpriv", f"--reuid={POSTGRES_OS_USER}", f"--regid={POSTGRES_OS_USER}", "--clear-groups", "--")
        return ["ip", "netns", "exec", self.name, *(user if as_postgres else ()), *command]


def ip(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *arguments], capture_output=True, text=True, check=False)


def unused_network() -> IPv4Network:
    """A /28 of 10.0.0.0/8 that no route of this namespace reaches."""
    routes = json.loads(ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    taken = [ip_network(route["dst"], strict=False) for route in routes if route.get("dst", "default") != "default"]
    while True:
        network = ip_network(f"10.{random.randrange(64, 250)}.{random.randrange(256)}.0/28")
        if not any(network.overlaps(other) for other in taken):
            return network


@contextlib.contextmanager
def namespaces(count: int) -> Iterator[tuple[Namespace, ...]]:
    """`count` namespaces, each on a /30 of its own (this side its first address, the namespace its
    second; lo up), reaching each other through this namespace (ip_forward on meanwhile); all removed
    after, ip_forward restored. Skips, saying why, where `ip netns add` fails."""
    if shutil.which("ip") is None:
        pytest.skip("no network namespace can be made here: iproute2's `ip` is not installed")
    token = os.urandom(3).hex()
    subnets = list(unused_network().subnets(new_prefix=30))
    made: list[Namespace] = []
    forwarding = IP_FORWARD.read_text()  # restored only if changed: a skip needs no root
    try:
        for n, subnet in enumerate(subnets[:count], start=1):
            gateway, address = (str(host) for host in subnet.hosts())
            namespace = Namespace(f"mlstack-{token}-{n}", f"mls{token}r{n}", gateway, address)
            added = ip("netns", "add", namespace.name)
            if added.returncode != 0:
                pytest.skip(f"no network namespace can be made here (`ip netns add`): {added.stderr.strip()}")
            made.append(namespace)
            inside = f"mls{token}n{n}"
            for step in (
                ("link", "add", namespace.link, "type", "veth", "peer", "name", inside, "netns", namespace.name),
                ("addr", "add", f"{gateway}/30", "dev", namespace.link),
                ("link", "set", namespace.link, "up"),
                ("-n", namespace.name, "addr", "add", f"{address}/30", "dev", inside),
                ("-n", namespace.name, "link", "set", inside, "up"),
                ("-n", namespace.name, "link", "set", "lo", "up"),
                ("-n", namespace.name, "route", "add", "default", "via", gateway),
            ):
                done = ip(*step)
                assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        IP_FORWARD.write_text("1\n")
        yield tuple(made)
    finally:
        for namespace in made:
            for pid in ip("netns", "pids", namespace.name).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", namespace.name)  # its end of the pair goes with it, and so the pair
            ip("link", "del", namespace.link)
        if IP_FORWARD.read_text() != forwarding:
            IP_FORWARD.write_text(forwarding)


@dataclass
class Processes:
    """The drill's long-running processes, each logging to a file of its own (`piped`: its stdout to us);
    `stop` ends them all."""

    log_dir: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(
        self, name: str, command: list[str], env: dict[str, str], *, piped: bool = False, **options
    ) -> subprocess.Popen:
        with (self.log_dir / f"{name}.log").open("w") as log:
            stdout, stderr = (subprocess.PIPE, log) if piped else (log, subprocess.STDOUT)
            process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr, text=True, **options)
        self.running[name] = process
        return process

    def stop(self) -> None:
        """SIGTERM to all (Patroni stops its PostgreSQL), waited for; SIGKILL to whatever outlives 30 s."""
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def tails(self) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            for log in sorted(self.log_dir.glob("*.log"))
        )


@dataclass
class Writer:
    """A WRITER process, its output read as it comes: ids sent, ids acknowledged (and when), failures."""

    process: subprocess.Popen
    sent: set[int] = field(default_factory=set)
    acknowledged: dict[int, float] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            event, *values = line.split()
            if event == "sent":
                self.sent.add(int(values[0]))
            elif event == "ack":
                self.acknowledged[int(values[0])] = float(values[1])
            elif event == "fail":
                self.failures.append((float(values[0]), values[1]))

    def acknowledged_after(self, moment: float) -> list[float]:
        return sorted(at for at in list(self.acknowledged.values()) if at > moment)

    def failed_after(self, moment: float, kind: str | None = None) -> list[float]:
        """When attempts failed after `moment` (with an error of class `kind` only, if given)."""
        return [at for at, error in list(self.failures) if at > moment and kind in (None, error)]

    def longest_silence(self) -> float:
        """The longest wait between two acknowledgements: what a client saw of the outage."""
        times = sorted(self.acknowledged.values())
        return max((later - earlier for earlier, later in pairwise(times)), default=0.0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)


def start_writer(processes: Processes, name: str, dsn: str, namespace: Namespace | None = None) -> Writer:
    command = [sys.executable, "-c", textwrap.dedent(WRITER), name]
    command = namespace.command(*command) if namespace else command
    return Writer(processes.start(name, command, {**base_env(), "DRILL_DSN": dsn}, piped=True))


def member_dsn(settings: Settings, member: Member) -> str:
    """The superuser's connection straight to `member`'s PostgreSQL."""
    return make_conninfo(
        host=member.address,
        port=member.postgres,
        dbname="postgres",
        user=settings.postgres_user,
        password=settings.postgres_password.get_secret_value(),
        connect_timeout=2,
    )


def rows(dsn: str) -> dict[str, set[int]]:
    """Each writer's ids in `drill`, as the server at `dsn` holds them."""
    found: dict[str, set[int]] = {}
    with psycopg.connect(dsn, autocommit=True) as connection:
        for writer, number in connection.execute("SELECT writer, id FROM drill"):
            found.setdefault(writer, set()).add(number)
    return found


def roles(settings: Settings, members: tuple[Member, ...]) -> dict[str, dict]:
    """Patroni's view of the cluster (by member name), from the first of `members` that answers."""
    return {state["name"]: state for state in cluster_state(settings, members) or []}


def leader_of(settings: Settings, members: tuple[Member, ...], other_than: str | None = None) -> str | None:
    """The leader's name in the view of the first of `members` that answers; None when it has none
    (or it is `other_than`)."""
    leader = next((name for name, state in roles(settings, members).items() if state["role"] == "leader"), None)
    return None if leader == other_than else leader


def patroni_role_inside(namespace: Namespace, member: Member) -> str | None:
    """The role `member`'s Patroni gives itself, asked from inside its namespace (None: no answer)."""
    code = (
        "import json, urllib.request; "
        f"print(json.load(urllib.request.urlopen('{member.rest_url}/patroni', timeout=2))['role'])"
    )
    said = subprocess.run(namespace.command(sys.executable, "-c", code), capture_output=True, text=True, check=False)
    return said.stdout.strip() or None


@dataclass
class Cluster:
    """The scratch project's settings, its members (on their namespaces' addresses), and each member's
    namespace by Patroni name."""

    settings: Settings
    members: tuple[Member, ...]
    spaces: dict[str, Namespace]


@contextlib.contextmanager
def partitionable_cluster(root: Path) -> Iterator[Cluster]:
    """A scratch project's three members, each in a namespace of its own (`namespaces`), from the same
    configuration functions the runtime uses, and HAProxy here in front of them; all removed after."""
    settings = make_project(root / "project")
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    settings = Settings.load(settings.project_dir)
    try:
        tools = find_tools(settings)
    except MissingToolError as missing:
        if REQUIRED_RUNTIME == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but the ha topology's tools are missing: {missing}")
        pytest.skip(f"the ha topology's tools are not installed: {missing}")
    root.chmod(0o711)  # `postgres` reaches its members' homes below
    processes = Processes(root / "logs")
    processes.log_dir.mkdir()
    with namespaces(3) as spaces:
        members = cluster_members(settings, tuple(space.address for space in spaces))
        cluster = Cluster(settings, members, {m.patroni: space for m, space in zip(members, spaces, strict=True)})
        try:
            start_members(cluster, tools, root, processes)
            yield cluster
        except BaseException:
            print(processes.tails(), file=sys.stderr)
            raise
        finally:
            processes.stop()


def start_members(cluster: Cluster, tools: NativeTools, root: Path, processes: Processes) -> None:
    """etcd, then Patroni (the first makes the cluster), then HAProxy; waited for until the leader has
    its synchronous replica and the other replica streams too."""
    settings, members = cluster.settings, cluster.members
    for member in members:
        data = root / member.etcd
        data.mkdir(mode=0o700)
        command = etcd_command(tools.etcd, settings, member, data, members)
        processes.start(member.etcd, cluster.spaces[member.patroni].command(*command), base_env(), cwd=data)
    for member in members:
        wait_for(f"{member.etcd} healthy", member.etcd_healthy)
    for member in members:
        home = root / member.patroni
        home.mkdir(mode=0o700)
        config = home / "patroni.yml"  # JSON, which is YAML
        config.write_text(json.dumps(patroni_config(settings, member, home, tools.postgres_bin, members)))
        for path in (home, config):
            shutil.chown(path, POSTGRES_OS_USER, POSTGRES_OS_USER)
        command = cluster.spaces[member.patroni].command(str(tools.patroni), str(config), as_postgres=True)
        processes.start(member.patroni, command, {**base_env(), "HOME": str(home)}, cwd=home)
        wait_for(f"{member.patroni} running", member.patroni_healthy)
    wait_for(
        "a leader, its synchronous replica and a streaming replica",
        lambda: (
            sorted((state["role"], state["state"]) for state in roles(settings, members).values())
            == [("leader", "running"), ("replica", "streaming"), ("sync_standby", "streaming")]
        ),
    )
    proxy = root / "haproxy.cfg"
    proxy.write_text(postgres_proxy_config(settings, members))
    processes.start("haproxy", [str(tools.haproxy), "-f", str(proxy), "-db"], base_env())
    wait_for("HAProxy to the leader only", lambda: all(takes_writes(settings) for _ in members))
    with psycopg.connect(settings.postgres_dsn("postgres"), autocommit=True) as db:
        db.execute("CREATE TABLE drill (writer text, id bigint, PRIMARY KEY (writer, id))")


def takes_writes(settings: Settings) -> bool:
    """A connection through HAProxy reaches a PostgreSQL that takes writes. HAProxy counts its members
    up until their checks fail, so at first it also sends to replicas: only once a connection per
    member (its round robin) reached the leader are the replicas out."""
    try:
        with psycopg.connect(settings.postgres_dsn("postgres"), connect_timeout=2) as connection:
            return connection.execute("SHOW transaction_read_only").fetchone() == ("off",)
    except psycopg.Error:
        return False


def test_a_partitioned_postgres_leader_stops_writing_and_loses_nothing(drill_report):
    root = Path(tempfile.mkdtemp(prefix="mlstack-partition-"))
    try:
        with partitionable_cluster(root) as cluster:
            drill(cluster, root, drill_report)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def drill(cluster: Cluster, root: Path, drill_report) -> None:
    settings, members = cluster.settings, cluster.members
    old = leader_of(settings, members)
    cut_member = next(member for member in members if member.patroni == old)
    cut = cluster.spaces[old]
    others = tuple(member for member in members if member != cut_member)
    processes = Processes(root / "logs")
    through_proxy = start_writer(processes, "through-haproxy", settings.postgres_dsn("postgres"))
    beside_leader = start_writer(processes, "beside-the-leader", member_dsn(settings, cut_member), cut)
    try:
        wait_for(
            "both writers acknowledged",
            lambda: len(through_proxy.acknowledged) >= 50 and len(beside_leader.acknowledged) >= 50,
        )
        assert ip("link", "set", cut.link, "down").returncode == 0
        cut_at = time.monotonic()

        new = wait_for("a new leader among the other two", lambda: leader_of(settings, others, other_than=old))
        elected = time.monotonic() - cut_at
        first_new_write = wait_for(
            "the writer through HAProxy acknowledged again", lambda: through_proxy.acknowledged_after(cut_at)
        )[0]
        # the old leader's commits wait for the synchronous replica it lost, until its Patroni, without
        # etcd, stops PostgreSQL and starts it again read-only
        cut_off = wait_for("the old leader cutting its writer off", lambda: beside_leader.failed_after(cut_at))[0]
        read_only = wait_for(
            "the old leader read-only",
            lambda: beside_leader.failed_after(cut_at, "ReadOnlySqlTransaction"),
            timeout=180,
        )[0]
        wait_for(
            "the old leader's Patroni no longer calling itself primary",
            lambda: patroni_role_inside(cut, cut_member) not in (None, "primary", "master"),
        )
        demoted = time.monotonic() - cut_at
        beside_leader.stop()
        late = beside_leader.acknowledged_after(cut_at)
        # no split brain: whatever the old leader took after the cut, it took before the new one took any
        assert not late or late[-1] < first_new_write, (late, first_new_write)

        assert ip("link", "set", cut.link, "up").returncode == 0
        healed_at = time.monotonic()
        wait_for(
            f"{old} streaming from {new} as a replica",
            lambda: roles(settings, members).get(old, {}).get("state") == "streaming",
        )
        rejoined = time.monotonic() - healed_at
        through_proxy.stop()
    finally:
        processes.stop()

    writers = {"through-haproxy": through_proxy, "beside-the-leader": beside_leader}
    landed = rows(settings.postgres_dsn("postgres"))
    for name, writer in writers.items():
        lost = set(writer.acknowledged) - landed.get(name, set())
        assert not lost, f"{name}: acknowledged, then lost: {sorted(lost)[:20]}"
        assert landed.get(name, set()) <= writer.sent
    wait_for(f"{old} holding exactly the leader's rows", lambda: rows(member_dsn(settings, cut_member)) == landed)
    assert leader_of(settings, members) == new
    counts = {
        name: f"rows sent {len(writer.sent)}, acknowledged {len(writer.acknowledged)}, "
        f"landed {len(landed.get(name, ()))}"
        for name, writer in writers.items()
    }
    drill_report(
        f"[drill: PostgreSQL leader partition] {old} cut off from the others, {new} elected {elected:.1f} s "
        f"after the cut. Through HAProxy: {counts['through-haproxy']}; a client saw "
        f"{through_proxy.longest_silence():.1f} s without an acknowledgement ({len(through_proxy.failures)} "
        f"failed attempts), writing again {first_new_write - cut_at:.1f} s after the cut. Beside the old leader: "
        f"{counts['beside-the-leader']}, {len(late)} acknowledged after the cut; the old leader cut its writer "
        f"off {cut_off - cut_at:.1f} s after the cut, was read-only from {read_only - cut_at:.1f} s, its "
        f"Patroni not primary by {demoted:.1f} s. Healed: a replica again {rejoined:.1f} s later, holding every "
        "acknowledged row and nothing else."
    )

"""Artifact upload and download throughput through the MLflow server, SeaweedFS against MinIO, in one run.

    mlstack up && .venv/bin/python benchmarks/artifacts.py [--sizes 1KB,1MB,100MB] [--clients 8]
        [--count-per-client 50,10,1] [--rounds 3]

Artifacts go through the server (proxied: `MlflowClient.log_artifact` and `download_artifacts`, logged
in as the client account of .env), to three servers on the stack's backend store:

  (a) the stack's own server, on the stack's artifact store (SeaweedFS): for reference;
  (b) the shipped deployment (gunicorn gthread, the stack's auth and store plugin), started here, its
      artifacts in a MinIO started here (the binary `mlstack install-tools --minio` builds, data in a
      temporary folder under the stack's state folder, i.e. on the disk of the native SeaweedFS's data;
      the server's S3 key is MinIO's root, generated here);
  (c) the same deployment, started here, on the stack's SeaweedFS.

(b) and (c) differ only in the store: the ratio column is SeaweedFS/MinIO from (c) over (b).

Each client is a thread with its own `MlflowClient` and its own run (MLflow caches a run's artifact
repository, and with it a download thread pool of 2 x cores, per run id: clients sharing a run would
share that pool). MLflow's HTTP session and its connection pool are shared by all clients of the
process, as in any program using MLflow; the pool holds at least --clients connections per server.
In a phase every client sends (or fetches) its objects one after another, all clients at once; the
time is from the common start until the last client is done, so MB/s and objects/s are aggregates
over the clients. A download is MLflow's: one listing request, then the GET. Every downloaded file is
compared (size and sha256) with what was uploaded, and the objects are counted in the store the
server is meant to write to, after the timing. Objects are deleted from the stores after each phase
(SeaweedFS frees their space when it next vacuums its volumes: up to ~5 GB in a default run).

Each round runs every size on every server, the servers taking turns in an order that rotates from
round to round; the table gives medians over rounds. 1 KB = 1024 bytes, 1 MB = 2^20 bytes, and MB/s
in the same unit.

A second table gives the CPU each phase cost, in CPU milliseconds per object (median over rounds): the
store (MinIO's process; the native stack's `weed server`: master, volume server, filer and S3 gateway),
the MLflow server (its process group: gunicorn and its workers) and the clients (this process). On
2 cores an upload is CPU-bound: a store that spends more per byte takes it from the server and the
clients. The stack's own server and SeaweedFS are counted only on the native runtime (their pid files);
under compose those cells are empty.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from servers import (
    Candidate,
    free_port,
    group_cpu_seconds,
    shipped_server_args,
    start_mlflow,
    start_process,
    wait_until_quiet,
)

from mlstack.bootstrap.storage import admin_s3, s3_client
from mlstack.health import http_ok
from mlstack.runtime.native.process import ManagedProcess, base_env
from mlstack.runtime.native.tools import MINIO_MODULE, SEAWEEDFS_VERSION, find_minio
from mlstack.settings import Settings
from mlstack.tracking.mlflow.config import use_credentials

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
MB = 1024**2
DIRECTIONS = ("upload", "download")
#: The parts whose CPU a phase costs, as the CPU table names them.
PARTS = ("store", "server", "clients")
#: Objects per client for the default sizes: a full run (3 rounds) takes about 8 minutes on 2 cores.
DEFAULT_COUNTS = {1024: 50, MB: 10, 100 * MB: 1}


def parse_size(text: str) -> int:
    """1KB, 1MB, 100MB, 2GB (powers of 1024); a bare number is bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMG]?B)?", text.strip().upper())
    if not match:
        raise SystemExit(f"--sizes: not a size: {text!r} (e.g. 1KB, 1MB, 100MB)")
    return int(match[1]) * UNITS[match[2] or "B"]


def size_label(size: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return f"{size}B"


def default_count(size: int) -> int:
    return DEFAULT_COUNTS.get(size, 50 if size <= 64 * 1024 else 10 if size <= 10 * MB else 1)


@dataclass
class Store:
    """Where a server's artifacts land: for the object count after each upload and the cleanup."""

    name: str
    s3: object
    bucket: str

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def delete(self, prefix: str) -> None:
        keys = self.keys(prefix)
        for start in range(0, len(keys), 1000):
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})


@dataclass
class Server:
    name: str
    url: str
    store: Store
    experiment_id: str = ""
    #: One (client, run id) per client thread.
    clients: list[tuple[MlflowClient, str]] = field(default_factory=list)
    #: Seconds a phase took, by (size, direction), one per round.
    seconds: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    #: Process groups whose CPU a phase is charged to: the store's and the server's (None: not known here).
    store_pgid: int | None = None
    server_pgid: int | None = None
    #: CPU seconds a phase cost, by (size, direction), one {part: seconds} per round.
    cpu: dict[tuple[int, str], list[dict[str, float]]] = field(default_factory=dict)

    def cpu_now(self) -> dict[str, float | None]:
        """CPU seconds used so far by the store's and the server's process groups and by this process."""
        return {
            "store": group_cpu_seconds(self.store_pgid) if self.store_pgid else None,
            "server": group_cpu_seconds(self.server_pgid) if self.server_pgid else None,
            "clients": sum(os.times()[:2]),
        }

    def timed(self, size: int, direction: str, clients: int, work: Callable[[int], None]) -> float:
        """run_together(clients, work), its CPU recorded by part."""
        before = self.cpu_now()
        seconds = run_together(clients, work)
        after = self.cpu_now()
        used = {part: after[part] - before[part] for part in PARTS if before[part] is not None}
        self.cpu.setdefault((size, direction), []).append(used)
        return seconds

    def prepare(self, clients: int, warmup_file: Path, scratch: Path) -> None:
        """An experiment, a run a client, and one untimed upload and download by each (connections,
        MLflow's artifact repository cache, the server's workers)."""
        creator = MlflowClient(tracking_uri=self.url)
        self.experiment_id = creator.create_experiment(f"bench-artifacts-{uuid.uuid4().hex[:8]}")
        for index in range(clients):
            client = MlflowClient(tracking_uri=self.url)
            run_id = client.create_run(self.experiment_id, run_name=f"client-{index}").info.run_id
            self.clients.append((client, run_id))

        def warm(index: int) -> None:
            client, run_id = self.clients[index]
            client.log_artifact(run_id, str(warmup_file), "warmup")
            client.download_artifacts(run_id, f"warmup/{warmup_file.name}", str(scratch / f"warmup-{index}"))

        run_together(len(self.clients), warm)

    @property
    def prefix(self) -> str:
        """The keys of this server's experiment in its bucket (--artifacts-destination s3://<bucket>)."""
        return f"{self.experiment_id}/"


def run_together(clients: int, work: Callable[[int], None]) -> float:
    """work(0) .. work(clients - 1) in as many threads, started together; seconds until the last ends."""
    barrier = threading.Barrier(clients + 1, timeout=120)

    def client(index: int) -> None:
        barrier.wait()
        work(index)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, index) for index in range(clients)]
        barrier.wait()
        start = time.perf_counter()
        for future in futures:
            future.result()
        return time.perf_counter() - start


@dataclass(frozen=True)
class Source:
    path: Path
    sha256: str


def write_sources(folder: Path, size: int, clients: int) -> list[Source]:
    """One file of random bytes a client (uploaded `count` times under different names)."""
    sources = []
    for index in range(clients):
        path = folder / f"{size_label(size)}-c{index}.bin"
        digest, left = hashlib.sha256(), size
        with path.open("wb") as handle:
            while left:
                chunk = os.urandom(min(left, 8 * MB))
                digest.update(chunk)
                handle.write(chunk)
                left -= len(chunk)
        sources.append(Source(path, digest.hexdigest()))
    return sources


def rate(value: float) -> str:
    """Three significant digits below 100 (1 KB objects move a few hundredths of a MB/s), else whole."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MB):
            digest.update(chunk)
    return digest.hexdigest()


def measure(server: Server, round_number: int, size: int, count: int, sources: list[Source], scratch: Path) -> None:
    """Upload then download `count` objects a client; verify, count in the store, delete; record the times."""
    label = size_label(size)

    def artifact_dir(index: int) -> str:
        return f"r{round_number}/{label}/{index}"

    def upload(client_index: int) -> None:
        client, run_id = server.clients[client_index]
        for index in range(count):
            client.log_artifact(run_id, str(sources[client_index].path), artifact_dir(index))

    # MlflowClient.download_artifacts puts a file in its destination folder by its name alone: a folder an object
    downloads = scratch / "downloads"
    destinations = [
        [downloads / f"c{client_index}" / str(index) for index in range(count)] for client_index in range(len(sources))
    ]
    for folder in (folder for client_folders in destinations for folder in client_folders):
        folder.mkdir(parents=True)
    downloaded_paths: list[list[Path]] = [[] for _ in sources]

    def download(client_index: int) -> None:
        client, run_id = server.clients[client_index]
        name = sources[client_index].path.name
        for index in range(count):
            local = client.download_artifacts(
                run_id, f"{artifact_dir(index)}/{name}", str(destinations[client_index][index])
            )
            downloaded_paths[client_index].append(Path(local))

    clients = len(server.clients)
    try:
        uploaded = server.timed(size, "upload", clients, upload)
        run_prefixes = [f"{server.prefix}{run_id}/artifacts/r{round_number}/{label}/" for _, run_id in server.clients]
        stored = sum(len(server.store.keys(prefix)) for prefix in run_prefixes)
        if stored != clients * count:
            raise RuntimeError(f"{server.name}: {stored} objects in {server.store.name}, expected {clients * count}")
        downloaded = server.timed(size, "download", clients, download)
        for client_index, source in enumerate(sources):
            if len(downloaded_paths[client_index]) != count:
                raise RuntimeError(
                    f"{server.name}: client {client_index} downloaded {len(downloaded_paths[client_index])} of {count}"
                )
            for path in downloaded_paths[client_index]:
                if path.stat().st_size != size or sha256_of(path) != source.sha256:
                    raise RuntimeError(f"{server.name}: {path} differs from what client {client_index} uploaded")
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
        server.store.delete(server.prefix)
    objects, megabytes = clients * count, clients * count * size / MB
    for direction, seconds in (("upload", uploaded), ("download", downloaded)):
        server.seconds.setdefault((size, direction), []).append(seconds)
        print(
            f"  {label:>6} {direction:<8} {server.name}: {objects} objects in {seconds:.2f} s = "
            f"{rate(megabytes / seconds)} MB/s, {rate(objects / seconds)} objects/s (verified)",
            flush=True,
        )


def start_minio(settings: Settings, workdir: Path) -> tuple[ManagedProcess, str, str, str]:
    """MinIO as the native runtime starts it (mlstack.runtime.native.runtime, `_start_minio`), on a
    temporary data folder, free ports and a root login made here: (process, endpoint, user, password)."""
    minio = find_minio(settings)
    if minio is None:
        raise SystemExit("no MinIO server: `mlstack install-tools --minio` builds it (Go >= 1.24)")
    user, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    data = workdir / "minio-data"
    data.mkdir()
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = {**base_env(), "MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password, "MINIO_UPDATE": "off"}
    address = endpoint.removeprefix("http://")
    command = [str(minio), "server", str(data), "--address", address, "--console-address", f"127.0.0.1:{free_port()}"]
    process = start_process(command, env, workdir, f"{endpoint}/minio/health/live")
    return process, endpoint, user, password


def native_pid(settings: Settings, service: str) -> int | None:
    """The live pid (its process group's) of a native runtime's service, else None (compose, not running)."""
    process = ManagedProcess(service, settings.state_path / "run", settings.state_path / "logs")
    return process.pid()


def minio_version(settings: Settings) -> str:
    minio = find_minio(settings)
    if minio == settings.tools_path / "bin" / "minio":
        return f"MinIO {MINIO_MODULE} (RELEASE.2025-09-07T16-13-09Z, `mlstack install-tools --minio`)"
    said = subprocess.run([str(minio), "--version"], capture_output=True, text=True).stdout.splitlines()
    return f"MinIO {said[0] if said else minio}"


def parse_counts(text: str | None, sizes: list[int]) -> list[int]:
    if text is None:
        return [default_count(size) for size in sizes]
    counts = [int(part) for part in text.split(",")]
    if len(counts) == 1:
        return counts * len(sizes)
    if len(counts) != len(sizes):
        raise SystemExit(f"--count-per-client: one number, or one a size ({len(sizes)}), not {len(counts)}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1KB,1MB,100MB", help="object sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads; default: %(default)s)")
    parser.add_argument(
        "--count-per-client",
        help="objects each client sends per size and round: one number, or one a size (default: 50,10,1 for "
        "1KB,1MB,100MB; other sizes: 50 up to 64KB, 10 up to 10MB, else 1)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="turns the servers take (default: %(default)s)")
    parser.add_argument(
        "--scratch",
        type=Path,
        help="where MinIO's data and the clients' files go (default: the stack's state folder, on the disk "
        "of the native SeaweedFS's data; keep both stores on one disk)",
    )
    args = parser.parse_args()
    sizes = [parse_size(part) for part in args.sizes.split(",")]
    counts = parse_counts(args.count_per_client, sizes)

    settings = Settings.load()
    use_credentials(settings)  # the client account of .env, for every client here
    # MLflow's one HTTP session keeps 10 connections per server unless told: one a client at least
    os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(10, args.clients))
    stack_url = settings.mlflow_tracking_uri or settings.mlflow_url
    if not http_ok(f"{stack_url}/health"):
        raise SystemExit(f"no MLflow server answers at {stack_url}: run `mlstack up` first")
    stack_store = f"your S3 at {settings.s3_url}" if settings.s3_endpoint else "SeaweedFS"
    print(
        f"MLflow {mlflow.__version__}; stack's store: {stack_store}"
        f"{'' if settings.s3_endpoint else f' {SEAWEEDFS_VERSION}'} ({settings.s3_url}); {minio_version(settings)}"
    )
    print(
        f"{args.clients} clients (threads, a MlflowClient and a run each); per client: "
        + ", ".join(f"{size_label(size)} x {count}" for size, count in zip(sizes, counts, strict=True))
        + f"; {args.rounds} rounds\n",
        flush=True,
    )

    bucket = settings.mlflow_artifact_bucket
    stack_s3 = Store(stack_store, admin_s3(settings), bucket)
    settings.state_path.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-artifacts-", dir=args.scratch or settings.state_path))
    processes: list[ManagedProcess] = []
    servers: list[Server] = []
    try:
        minio, minio_url, minio_user, minio_password = start_minio(settings, scratch)
        processes.append(minio)
        minio_s3 = s3_client(settings, minio_user, minio_password, endpoint=minio_url)
        minio_s3.create_bucket(Bucket=bucket)
        candidate = Candidate(
            "shipped deployment", shipped_server_args(settings), auth="shipped", fast_store=settings.mlstack_fast_store
        )
        to_minio = {
            "MLFLOW_S3_ENDPOINT_URL": minio_url,
            "AWS_ACCESS_KEY_ID": minio_user,
            "AWS_SECRET_ACCESS_KEY": minio_password,
        }
        on_minio, minio_server_url = start_mlflow(settings, candidate, scratch, env_overrides=to_minio)
        processes.append(on_minio)
        on_seaweedfs, seaweedfs_server_url = start_mlflow(settings, candidate, scratch)
        processes.append(on_seaweedfs)
        print("waiting until the started servers' processes are quiet ...", flush=True)
        for process in processes:
            wait_until_quiet(process.pid())

        short = "SeaweedFS" if not settings.s3_endpoint else "your S3"
        stack_store_pid = None if settings.s3_endpoint else native_pid(settings, "seaweedfs")
        servers = [  # (b) and (c) first: print_results takes the ratio of these two
            Server(
                "(b) same deployment, MinIO",
                minio_server_url,
                Store("MinIO", minio_s3, bucket),
                store_pgid=minio.pid(),
                server_pgid=on_minio.pid(),
            ),
            Server(
                f"(c) same deployment, {short}",
                seaweedfs_server_url,
                stack_s3,
                store_pgid=stack_store_pid,
                server_pgid=on_seaweedfs.pid(),
            ),
            Server(
                f"(a) stack's server, {short}",
                stack_url,
                stack_s3,
                store_pgid=stack_store_pid,
                server_pgid=native_pid(settings, "mlflow"),
            ),
        ]
        sources_dir = scratch / "sources"
        sources_dir.mkdir()
        warmup = sources_dir / "warmup.bin"
        warmup.write_bytes(os.urandom(1024))
        for server in servers:
            server.prepare(args.clients, warmup, scratch)
            server.store.delete(server.prefix)

        sources = {size: write_sources(sources_dir, size, args.clients) for size in sizes}
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", flush=True)
            turn = round_number % len(servers)
            for size, count in zip(sizes, counts, strict=True):
                for server in servers[turn:] + servers[:turn]:
                    measure(server, round_number, size, count, sources[size], scratch)
    finally:
        for server in servers:
            if server.experiment_id:
                try:
                    server.store.delete(server.prefix)
                    MlflowClient(tracking_uri=stack_url).delete_experiment(server.experiment_id)
                except Exception as error:  # a failed cleanup must not hide the run's own error
                    print(f"cleanup of {server.name}: {error}")
        for process in reversed(processes):
            process.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print_results(servers, sizes, counts, args)


def print_results(servers: list[Server], sizes: list[int], counts: list[int], args: argparse.Namespace) -> None:
    """Medians over rounds: aggregate MB/s and objects/s per server, and SeaweedFS/MinIO from (c)/(b)
    (the same for MB/s and objects/s: both servers move the same objects)."""
    minio, seaweedfs = servers[0], servers[1]
    print(f"\nmedian of {args.rounds} rounds, {args.clients} clients, aggregate MB/s | objects/s (1 MB = 2^20 bytes)\n")
    names = " | ".join(server.name for server in servers)
    print(f"| size | direction | objects a round | {names} | SeaweedFS/MinIO (c/b) |")
    print("|---|---|---:|" + "---:|" * (len(servers) + 1))
    for size, count in zip(sizes, counts, strict=True):
        objects = args.clients * count
        for direction in DIRECTIONS:
            cells, rates = [], {}
            for server in servers:
                seconds = server.seconds[(size, direction)]
                rates[server.name] = statistics.median(objects * size / MB / s for s in seconds)
                per_second = statistics.median(objects / s for s in seconds)
                cells.append(f"{rate(rates[server.name])} MB/s, {rate(per_second)} obj/s")
            ratio = rates[seaweedfs.name] / rates[minio.name]
            print("| " + " | ".join([size_label(size), direction, f"{objects:,}", *cells, f"**{ratio:.2f}x**"]) + " |")
    print_cpu(servers, sizes, counts, args)


def print_cpu(servers: list[Server], sizes: list[int], counts: list[int], args: argparse.Namespace) -> None:
    """CPU milliseconds per object, by part (store, MLflow server, clients) and their total: medians over rounds."""
    print(f"\nCPU ms per object, median of {args.rounds} rounds: store / MLflow server / clients (total)\n")
    print("| size | direction | " + " | ".join(server.name for server in servers) + " |")
    print("|---|---|" + "---:|" * len(servers))
    for size, count in zip(sizes, counts, strict=True):
        objects = args.clients * count
        for direction in DIRECTIONS:
            cells = []
            for server in servers:
                rounds = server.cpu.get((size, direction), [])
                parts = [
                    statistics.median(used[part] for used in rounds) * 1000 / objects
                    if rounds and part in rounds[0]
                    else None
                    for part in PARTS
                ]
                shown = " / ".join("-" if value is None else f"{value:.3g}" for value in parts)
                total = f" ({sum(parts):.3g})" if None not in parts else ""
                cells.append(shown + total)
            print("| " + " | ".join([size_label(size), direction, *cells]) + " |")


if __name__ == "__main__":
    main()

"""mlstack's exporter (Prometheus job `mlstack`, docs/operations.md): what the MLflow stack holds and
the state of what keeps it, read from its sources when Prometheus scrapes.

The sources: PostgreSQL as the monitoring role (runs, experiments, models, metric points written,
database sizes; on ha, each replica's replication lag), the artifact bucket as the store's admin, the
backup folder, the spool, and the ClearML server when the project has its API credentials. A scrape
reads them all at once, each within a bounded time: every connection, statement and call has a
timeout, and the bucket, whose listing grows with it, is walked for BUCKET_SECONDS_PER_SCRAPE at most,
the next scrape going on where this one stopped (its totals are those of the last complete walk: every
scrape's, for a bucket listed within that time). A source that fails reports
mlstack_source_up{source}=0, and logs why once until the reason changes; the others report as usual.
The free space of the folders the stack fills is read at every scrape, whatever the sources do.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatch
from pathlib import Path
from typing import Protocol

import psycopg
import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlstack.bootstrap.clearml import ClearMLApi
from mlstack.errors import MlstackError, RuntimeUnavailableError
from mlstack.runtime.native.postgres import postgres_layout
from mlstack.settings import Settings

log = logging.getLogger(__name__)

#: Seconds each connection, statement or call of a scrape may take.
TIMEOUT_SECONDS = 5
#: Seconds a scrape spends walking the bucket (past them, it ends the page it is on).
BUCKET_SECONDS_PER_SCRAPE = 3.0
#: How PostgreSQL's pg_stat_activity names the exporter's connections.
APPLICATION_NAME = "mlstack-exporter"

#: MLflow's run statuses (mlflow.entities.RunStatus), each reported, zero included.
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
#: MLflow's lifecycle stages of an experiment (mlflow.entities.LifecycleStage).
EXPERIMENT_STAGES = ("active", "deleted")
#: The stage MLflow's registry gives a deleted model version, whose row it keeps
#: (mlflow.entities.model_registry.model_version_stages.STAGE_DELETED_INTERNAL).
DELETED_MODEL_VERSION_STAGE = "Deleted_Internal"
#: clearml-server's task statuses (apiserver/database/model/task/task.py TaskStatus).
CLEARML_TASK_STATUSES = (
    "created",
    "queued",
    "in_progress",
    "stopped",
    "publishing",
    "published",
    "closed",
    "failed",
    "completed",
    "unknown",
)
#: The spool's folders (mlstack.tracking.mlflow.spool's SPOOL_FOLDER and REJECTED_FOLDER, named here
#: too: importing that module loads MLflow, 170 MB the exporter has no other use for).
SPOOL_FOLDER, REJECTED_FOLDER = "spool", "rejected"
#: Files written beside their final name and renamed into place once complete (spool files, archives).
PARTIAL_SUFFIX = ".partial"
#: Backup archives (mlstack.maintenance: mlstack-mlflow-<time>.tar, mlstack-clearml-<time>.tar); one
#: being written is `.<name>.partial` until complete.
ARCHIVE_PATTERN = "mlstack-*.tar"


class Source(Protocol):
    """One place the exporter reads; `read` raises when it cannot."""

    name: str

    def read(self) -> list[Metric]: ...


def _counts(name: str, documentation: str, label: str, counts: dict[str, int], every: Iterable[str] = ()) -> Metric:
    """A gauge of `counts` by `label`, with 0 for each value of `every` that has no count."""
    gauge = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted({**dict.fromkeys(every, 0), **counts}.items()):
        gauge.add_metric([value], count)
    return gauge


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=value)


class PostgresSource:
    """The backend store as the monitoring role (pg_monitor, reads the MLflow tables, writes nothing),
    through POSTGRES_PORT: on ha HAProxy, so the leader, whose pg_stat_replication has the replicas."""

    name = "postgres"

    def __init__(self, settings: Settings):
        self.settings = settings

    def read(self) -> list[Metric]:
        s = self.settings
        with psycopg.connect(
            s.postgres_dsn(as_monitor=True),
            autocommit=True,
            connect_timeout=TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
            options=f"-c statement_timeout={TIMEOUT_SECONDS * 1000}",
        ) as connection:

            def counts(query: str, parameters: tuple = ()) -> dict[str, int]:
                return dict(connection.execute(query, parameters).fetchall())

            def count(query: str, parameters: tuple = ()) -> int:
                return connection.execute(query, parameters).fetchone()[0]

            metrics = [
                _counts(
                    "mlstack_mlflow_runs",
                    "Live runs (lifecycle stage active) by status.",
                    "status",
                    counts("SELECT status, count(*) FROM runs WHERE lifecycle_stage = 'active' GROUP BY status"),
                    RUN_STATUSES,
                ),
                _counts(
                    "mlstack_mlflow_experiments",
                    "Experiments by lifecycle stage.",
                    "lifecycle_stage",
                    counts("SELECT lifecycle_stage, count(*) FROM experiments GROUP BY lifecycle_stage"),
                    EXPERIMENT_STAGES,
                ),
                _gauge(
                    "mlstack_mlflow_registered_models",
                    "Registered models.",
                    count("SELECT count(*) FROM registered_models"),
                ),
                _gauge(
                    "mlstack_mlflow_model_versions",
                    "Model versions (deleted ones left out).",
                    count(
                        "SELECT count(*) FROM model_versions WHERE current_stage IS DISTINCT FROM %s",
                        (DELETED_MODEL_VERSION_STAGE,),
                    ),
                ),
                CounterMetricFamily(
                    "mlstack_mlflow_metric_points_written",
                    "Rows inserted into the metrics table (PostgreSQL's statistics); rate() is points per second.",
                    value=count(
                        "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables "
                        "WHERE schemaname = 'public' AND relname = 'metrics'"
                    ),
                ),
                _counts(
                    "mlstack_postgres_database_bytes",
                    "Size on disk of the MLflow and auth databases.",
                    "database",
                    counts(
                        "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)",
                        ([s.postgres_db, s.mlflow_auth_db],),
                    ),
                ),
            ]
            if s.topology == "ha":
                metrics.append(
                    _counts(
                        "mlstack_postgres_replication_lag_bytes",
                        "WAL the leader has written that the replica has not replayed yet.",
                        "member",
                        counts(
                            "SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                            "FROM pg_stat_replication WHERE replay_lsn IS NOT NULL"
                        ),
                    )
                )
        return metrics


def _admin_s3(settings: Settings):
    """The artifact store's admin identity (as mlstack.bootstrap.storage.admin_s3), with a scrape's
    bounds: TIMEOUT_SECONDS to connect or read, no retry (admin_s3 retries 5 times, 60 s each)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_url,
        aws_access_key_id=settings.s3_admin_access_key,
        aws_secret_access_key=settings.s3_admin_secret_key.get_secret_value(),
        region_name="us-east-1",
        config=Config(
            connect_timeout=TIMEOUT_SECONDS,
            read_timeout=TIMEOUT_SECONDS,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


class BucketSource:
    """Objects and bytes of the artifact bucket, walked a page (1,000 objects) at a time in key order
    for BUCKET_SECONDS_PER_SCRAPE a scrape; the walk goes on from its last key at the next scrape, and
    a page that fails is asked for again then. Memory: one page."""

    name = "s3"

    def __init__(self, settings: Settings, client=None, seconds_per_scrape: float = BUCKET_SECONDS_PER_SCRAPE):
        self.bucket = settings.mlflow_artifact_bucket
        self.s3 = client or _admin_s3(settings)
        self.seconds_per_scrape = seconds_per_scrape
        self._lock = threading.Lock()
        self._last_key = ""  # where the walk goes on ("": from the start)
        self._walked = (0, 0)  # objects and bytes the walk has passed
        self._totals: tuple[int, int] | None = None  # those of the last complete walk

    def read(self) -> list[Metric]:
        with self._lock:
            deadline = time.monotonic() + self.seconds_per_scrape
            while self._walk_page() and time.monotonic() < deadline:
                pass
            totals = self._totals
        if totals is None:
            return []  # the first walk has not ended yet
        objects, size = totals
        return [
            _counts("mlstack_bucket_objects", "Objects in the artifact bucket.", "bucket", {self.bucket: objects}),
            _counts("mlstack_bucket_bytes", "Bytes in the artifact bucket.", "bucket", {self.bucket: size}),
        ]

    def _walk_page(self) -> bool:
        """Walk one page; False when that ended the walk (its totals kept, the next one starts over)."""
        after = {"StartAfter": self._last_key} if self._last_key else {}
        page = self.s3.list_objects_v2(Bucket=self.bucket, **after)
        contents = page.get("Contents", [])
        objects, size = self._walked
        self._walked = objects + len(contents), size + sum(item["Size"] for item in contents)
        if page.get("IsTruncated") and contents:
            self._last_key = contents[-1]["Key"]
            return True
        self._totals, self._walked, self._last_key = self._walked, (0, 0), ""
        return False


class BackupSource:
    """The newest complete archive in the backup folder (MLSTACK_BACKUP_DIR): when it was written and
    its size; nothing when there is none."""

    name = "backups"

    def __init__(self, settings: Settings):
        self.folder = settings.backup_path

    def read(self) -> list[Metric]:
        if not self.folder.is_dir():
            return []
        archives = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if fnmatch(entry.name, ARCHIVE_PATTERN) and entry.is_file():
                    try:
                        archives.append(entry.stat())
                    except FileNotFoundError:  # deleted since it was listed
                        continue
        if not archives:
            return []
        newest = max(archives, key=lambda stat: stat.st_mtime)
        return [
            _gauge(
                "mlstack_backup_last_success_timestamp_seconds",
                "When the newest complete backup archive was written (Unix time).",
                newest.st_mtime,
            ),
            _gauge("mlstack_backup_last_size_bytes", "Size of the newest complete backup archive.", newest.st_size),
        ]


def _complete_files(folder: Path) -> int:
    """Files in `folder` (not below it), those being written left out; 0 when it does not exist."""
    if not folder.is_dir():
        return 0
    with os.scandir(folder) as entries:
        return sum(1 for entry in entries if entry.is_file() and not entry.name.endswith(PARTIAL_SUFFIX))


class SpoolSource:
    """The state folder's spool: what `mlstack sync` has still to send, and what it set aside."""

    name = "spool"

    def __init__(self, settings: Settings):
        self.folder = settings.state_path / SPOOL_FOLDER

    def read(self) -> list[Metric]:
        return [
            _gauge(
                "mlstack_spool_pending_files",
                "Spool files `mlstack sync` has still to send (points, run ends).",
                _complete_files(self.folder),
            ),
            _gauge(
                "mlstack_spool_set_aside_files",
                "Spool files `mlstack sync` set aside in spool/rejected/ (refused by the server, or unreadable).",
                _complete_files(self.folder / REJECTED_FOLDER),
            ),
        ]


class _ScrapeApi(ClearMLApi):
    """The apiserver's calls as bootstrap makes them, tried once: a scrape has no time for retries."""

    def _post(self, endpoint: str, payload: dict, **auth) -> requests.Response:
        return self.http.post(f"{self.base_url}/{endpoint}", json=payload, timeout=self.timeout, **auth)


class ClearMLSource:
    """The ClearML server, logged in with the project's API credentials: each queue's waiting tasks
    (queues.get_num_entries) and listening workers (workers.get_all), and tasks by status
    (organization.get_entities_count: the count the web UI shows, hidden tasks left out)."""

    name = "clearml"

    def __init__(self, settings: Settings):
        self.url = settings.clearml_api_url
        self.key = settings.clearml_api_access_key or ""
        self.secret = settings.clearml_api_secret_key.get_secret_value() if settings.clearml_api_secret_key else ""

    def read(self) -> list[Metric]:
        api = _ScrapeApi(self.url, timeout=TIMEOUT_SECONDS)
        with api.http:
            token = api.login(self.key, self.secret)
            queues = api.call("queues.get_all", token, {"only_fields": ["id", "name"]})["queues"]
            workers = api.call("workers.get_all", token)["workers"]
            waiting = {
                queue["name"]: api.call("queues.get_num_entries", token, {"queue": queue["id"]})["num"]
                for queue in queues
            }
            tasks = {
                status: api.call("organization.get_entities_count", token, {"tasks": {"status": [status]}})["tasks"]
                for status in CLEARML_TASK_STATUSES
            }
        listening = Counter(queue["id"] for worker in workers for queue in worker.get("queues") or [])
        return [
            _counts("mlstack_clearml_queue_tasks", "Tasks waiting in each ClearML queue.", "queue", waiting),
            _counts(
                "mlstack_clearml_queue_workers",
                "ClearML workers listening on each queue.",
                "queue",
                {queue["name"]: listening[queue["id"]] for queue in queues},
            ),
            _gauge("mlstack_clearml_workers", "ClearML workers registered (active in the last hour).", len(workers)),
            _counts("mlstack_clearml_tasks", "ClearML tasks by status.", "status", tasks),
        ]


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:500]


class MlstackCollector(Collector):
    """Every source read at once at each scrape, with mlstack_source_up and mlstack_source_scrape_seconds
    for each, and the folders' filesystems."""

    def __init__(self, sources: Sequence[Source], folders: Sequence[Path]):
        self.sources, self.folders = sources, folders
        self._failures: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterable[Metric]:
        with ThreadPoolExecutor(max_workers=len(self.sources), thread_name_prefix="mlstack-source") as pool:
            readings = list(pool.map(self._read, self.sources))
        up = GaugeMetricFamily(
            "mlstack_source_up", "1 when the source answered this scrape, else 0.", labels=["source"]
        )
        seconds = GaugeMetricFamily(
            "mlstack_source_scrape_seconds", "Seconds reading the source took this scrape.", labels=["source"]
        )
        for source, (metrics, answered, elapsed) in zip(self.sources, readings, strict=True):
            yield from metrics
            up.add_metric([source.name], 1 if answered else 0)
            seconds.add_metric([source.name], elapsed)
        yield up
        yield seconds
        yield from self._filesystems()

    def _read(self, source: Source) -> tuple[list[Metric], bool, float]:
        started = time.monotonic()
        try:
            metrics = source.read()
        except Exception as error:  # noqa: BLE001 - a source's failure is its own: the others still report
            self._note(f"source {source.name}", _one_line(error))
            return [], False, time.monotonic() - started
        self._note(f"source {source.name}", None)
        return metrics, True, time.monotonic() - started

    def _filesystems(self) -> list[Metric]:
        """Space on each folder's filesystem; a folder not made yet, its nearest parent's (where it will be)."""
        avail = GaugeMetricFamily(
            "mlstack_filesystem_avail_bytes",
            "Bytes free for unprivileged users on the folder's filesystem.",
            labels=["path"],
        )
        size = GaugeMetricFamily("mlstack_filesystem_size_bytes", "Size of the folder's filesystem.", labels=["path"])
        for folder in self.folders:
            try:
                stats = os.statvfs(next(path for path in (folder, *folder.parents) if path.exists()))
            except OSError as error:
                self._note(f"filesystem of {folder}", _one_line(error))
                continue
            self._note(f"filesystem of {folder}", None)
            avail.add_metric([str(folder)], stats.f_bavail * stats.f_frsize)
            size.add_metric([str(folder)], stats.f_blocks * stats.f_frsize)
        return [avail, size]

    def _note(self, what: str, failure: str | None) -> None:
        """Log a failure once until its reason changes, and the recovery."""
        with self._lock:
            before = self._failures.get(what)
            self._failures[what] = failure
        if failure and failure != before:
            log.warning("%s failed: %s", what, failure)
        elif before and not failure:
            log.info("%s answers again", what)


def _postgres_home(settings: Settings) -> Path | None:
    """Where the native runtime keeps PostgreSQL's data when it is outside the state folder (as root,
    mlstack.runtime.native.postgres.postgres_layout); None when it is inside, or there is none here."""
    try:
        home = postgres_layout(settings).home
    except RuntimeUnavailableError:  # root without a `postgres` user (a container): no native PostgreSQL
        return None
    return home if home.is_dir() and not home.is_relative_to(settings.state_path) else None


def watched_folders(settings: Settings) -> list[Path]:
    """The state folder, the backup folder, and PostgreSQL's data folder when it is elsewhere."""
    return [settings.state_path, settings.backup_path, *filter(None, [_postgres_home(settings)])]


def project_sources(settings: Settings) -> list[Source]:
    """The project's sources: ClearML's only with its API credentials in the settings."""
    sources: list[Source] = [
        PostgresSource(settings),
        BucketSource(settings),
        BackupSource(settings),
        SpoolSource(settings),
    ]
    secret = settings.clearml_api_secret_key
    if settings.clearml_api_access_key and secret and secret.get_secret_value():
        sources.append(ClearMLSource(settings))
    return sources


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the project's metrics on http://host:port/metrics until SIGINT or SIGTERM."""
    registry = CollectorRegistry()
    registry.register(MlstackCollector(project_sources(settings), watched_folders(settings)))
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the server's threads inherit it: sigwait gets them
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise MlstackError(
            f"the exporter cannot listen on {host}:{port} ({error.strerror or error}): "
            "choose another address with --listen HOST:PORT or MLSTACK_EXPORTER_PORT in .env"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    log.info("serving the metrics of %s on http://%s:%d/metrics", settings.project_dir, shown, port)
    signal.sigwait(stop)
    server.shutdown()
    server.server_close()
    log.info("stopped")

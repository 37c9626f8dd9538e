"""Non-blocking metric logging: a bounded in-memory buffer drained by background flusher threads.

`put` costs the caller a lock and a deque append. Flusher threads take up to one request's worth
of points (FIFO), send them with log_batch, and retry transient failures with exponential backoff
(tenacity) for `outage_budget` seconds. Past the budget, or on a batch the server refuses, the
points go to the local spool and the next call from the user raises MetricsSpooledError naming
how many points are kept where: nothing is dropped silently. After that report the pipeline sends
to the server again (a still-failing server starts a new budget).

A point leaves memory only once it is on the server or on disk: when the spool cannot be written
(a full disk), the flusher keeps its batch and tries the server and the spool again in turn, and
the caller's next call (and `flush`, which never waits on a flusher that cannot finish) raises
SpoolWriteError naming how many points are held in memory and how many are on disk.

Order: each point carries the timestamp and step of its log call, and each flusher sends its
batches in order, so the server's history (ordered by step, then timestamp) is the logged order.
Memory: at most `capacity` points wait; a caller that outruns the server blocks (backpressure).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from itertools import groupby

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from mlstack.tracking.errors import MetricsSpooledError, SpoolWriteError
from mlstack.tracking.mlflow.spool import MetricSpool
from mlstack.tracking.mlflow.transport import MetricSender, Point, RejectedBatchError, TransientSendError

logger = logging.getLogger(__name__)
#: Points written to the spool at a time: on a full disk, what fits is kept there.
SPOOL_CHUNK = 1000


class MetricPipeline:
    """Buffer + flushers for one tracking store. Thread-safe; one per process and tracking URI."""

    def __init__(
        self,
        sender_factory: Callable[[], MetricSender],
        spool: MetricSpool,
        *,
        capacity: int = 200_000,
        flush_interval: float = 0.5,
        flushers: int = 2,
        outage_budget: float = 300.0,
        max_backoff: float = 5.0,
    ):
        self._spool = spool
        self._capacity = capacity
        self._flush_interval = flush_interval
        self._outage_budget = outage_budget
        self._max_backoff = max_backoff
        self._points: deque[Point] = deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._enqueued = 0  # sequence number of the next point put
        self._taken = 0  # sequence number of the next point a flusher takes
        self._in_flight: dict[int, int] = {}  # first sequence number -> size of batches being sent
        self._failure: MetricsSpooledError | None = None  # spooled points the caller has not heard of yet
        self._abandon = threading.Event()
        self._stop = threading.Event()  # set by close: a flusher holding an undeliverable batch gives up
        self._closed = False
        self._threads = []
        for index in range(flushers):
            sender = sender_factory()
            thread = threading.Thread(
                target=self._flush_loop, args=(sender,), name=f"mlstack-flusher-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    @property
    def pending(self) -> int:
        """Points logged but not yet confirmed by the store (buffered or in flight)."""
        with self._lock:
            return self._enqueued - self._taken + sum(self._in_flight.values())

    def put(self, run_id: str, key: str, value: float, timestamp: int, step: int) -> None:
        """Queue one validated point; blocks only while the buffer is full.

        If points were spooled since the caller last heard about it, this point is still queued and
        MetricsSpooledError is raised (once per spool episode).
        """
        with self._lock:
            while len(self._points) >= self._capacity and self._failure is None:
                self._not_full.wait()
            self._points.append((run_id, key, value, timestamp, step))
            self._enqueued += 1
            if len(self._points) == 1000:
                self._work.notify()
            if self._failure is not None:
                raise self._report_failure()

    def flush(self, timeout: float | None = None) -> None:
        """Block until every point put before this call is stored; raise MetricsSpooledError if spooled."""
        with self._lock:
            target = self._enqueued
            self._work.notify_all()
            # a batch that can reach neither the server nor the disk may never settle: report it at once
            done = self._progress.wait_for(
                lambda: self._low_watermark() >= target or isinstance(self._failure, SpoolWriteError), timeout
            )
            if self._failure is not None:
                raise self._report_failure()
            if not done:
                raise TimeoutError(
                    f"{self._enqueued - self._low_watermark()} metric points still unsent after {timeout} s"
                )

    def close(self) -> None:
        """Flush (as long as the outage budget allows), then stop the flusher threads (a batch that
        could go neither to the server nor to disk is given up: the error raised named it)."""
        try:
            try:
                self.flush()
            except SpoolWriteError:
                self.flush()  # that report may predate the server's return: one more round (one budget)
        finally:
            with self._lock:
                self._closed = True
                self._abandon.set()
                self._stop.set()
                self._work.notify_all()
                self._progress.notify_all()
            for thread in self._threads:
                thread.join()

    def _low_watermark(self) -> int:
        return min(self._in_flight, default=self._taken)

    def _report_failure(self) -> MetricsSpooledError:
        """The pending spool failure, now handed to the caller; flushers go back to retrying."""
        failure, self._failure = self._failure, None
        self._abandon.clear()
        return failure

    def _take_batch(self, limit: int) -> tuple[int, list[Point]] | None:
        with self._lock:
            while not self._points:
                if self._closed:
                    return None
                self._work.wait(self._flush_interval)
            first = self._taken
            count = min(limit, len(self._points))
            batch = [self._points.popleft() for _ in range(count)]
            self._taken += count
            self._in_flight[first] = count
            self._not_full.notify_all()
            return first, batch

    def _flush_loop(self, sender: MetricSender) -> None:
        while (taken := self._take_batch(sender.max_points)) is not None:
            first, batch = taken
            self._deliver(sender, batch)
            with self._lock:
                del self._in_flight[first]
                self._progress.notify_all()

    def _deliver(self, sender: MetricSender, batch: list[Point]) -> None:
        """Send `batch`, or spool it; while neither works, keep it and try both again (until closed)."""
        pause = 0.2
        while True:
            try:
                self._send_with_retry(sender, batch)
                return
            except (TransientSendError, RejectedBatchError) as error:
                failure: BaseException = error
            except Exception as error:  # noqa: BLE001 - a flusher must never die with points in hand
                logger.exception("metric flusher failed unexpectedly")
                failure = error
            if self._spool_after_failure(batch, failure) or self._closed:
                return
            self._stop.wait(pause)
            pause = min(pause * 2, self._max_backoff)

    def _send_with_retry(self, sender: MetricSender, batch: list[Point]) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientSendError),
            wait=wait_exponential(multiplier=0.2, max=self._max_backoff),
            stop=stop_after_delay(self._outage_budget) | (lambda _state: self._abandon.is_set()),
            before_sleep=_warn_retry,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                # a batch holds points of several runs when they are logged concurrently
                for run_id, run_points in groupby(batch, key=lambda point: point[0]):
                    sender.send(run_id, list(run_points))

    def _spool_after_failure(self, batch: list[Point], error: BaseException) -> bool:
        """Keep `batch` and everything still buffered in the spool, and switch to spooling mode. The
        spool is written a chunk at a time; what a full disk leaves out stays in memory (the batch
        with its flusher, the rest in the buffer). Returns whether the batch is on disk."""
        with self._lock:
            self._abandon.set()
            remaining = list(self._points)
            pending = [*batch, *remaining]
            written, disk = 0, None
            try:
                for start in range(0, len(pending), SPOOL_CHUNK):
                    written += self._spool.append(pending[start : start + SPOOL_CHUNK])
            except OSError as full:
                disk = full
            from_buffer = max(0, written - len(batch))
            for _ in range(from_buffer):
                self._points.popleft()
            self._taken += from_buffer
            if disk is None:
                failure = MetricsSpooledError(self._spool.points, self._spool.path, error)
            else:
                held = self._enqueued - self._taken + sum(self._in_flight.values())
                held -= min(written, len(batch))  # the part of this batch that did reach the disk
                failure = SpoolWriteError(held, self._spool.points, self._spool.path, error, disk)
            self._failure = failure
            self._not_full.notify_all()
            self._progress.notify_all()
        logger.error("%s", failure)
        return written >= len(batch)


def _warn_retry(state) -> None:
    logger.warning(
        "MLflow server unreachable (%s); retrying metric batch in %.1f s",
        state.outcome.exception(),
        state.next_action.sleep,
    )

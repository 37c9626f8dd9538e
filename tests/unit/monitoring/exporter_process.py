"""`mlstack monitoring exporter` run as a user runs it, and its /metrics read as Prometheus reads them
(the unit tests' scratch projects and the integration tests' live stack share these)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import user_environment, wait_for

#: Seconds the exporter may take to answer its first scrape.
START_SECONDS = 60

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (sorted)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample `name` with exactly `labels`, or None."""
    return samples.get((name, tuple(sorted(labels.items()))))


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples `name` by the value of their one label `label`."""
    return {dict(labels)[label]: found for (sample, labels), found in samples.items() if sample == name}


def scrape(url: str) -> Samples:
    answer = requests.get(url, timeout=30)
    answer.raise_for_status()
    return parse(answer.text)


@contextlib.contextmanager
def running_exporter(project_dir: Path, port: int, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlstack monitoring exporter --listen 127.0.0.1:<port>` in `project_dir`, as a user starts it;
    yields its /metrics URL once it answers, and the process. Stopped with SIGTERM afterwards, which must
    end it cleanly (exit 0)."""
    url = f"http://127.0.0.1:{port}/metrics"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlstack.cli", "monitoring", "exporter", "--listen", f"127.0.0.1:{port}"],
            cwd=project_dir,
            env=user_environment(project_dir / ".home"),
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def answering() -> bool:
        assert process.poll() is None, f"the exporter exited ({process.returncode}):\n{log.read_text()}"
        return _answers(url)

    try:
        wait_for(f"the exporter answering at {url} (its log: {log})", answering, START_SECONDS)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, f"the exporter ended with {code} on SIGTERM:\n{log.read_text()}"


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=30).status_code == 200
    except requests.ConnectionError:
        return False

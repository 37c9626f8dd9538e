"""Server-side jobs on the shipped stack: a scorer job submitted through the jobs API runs in the
server's job runner, its result is read back through the same API, and its assessment lands on the
trace in the backend store. The runner is part of the server's process tree: stopped with it and
started again with it."""

from __future__ import annotations

import json
import os

import mlflow
import psutil
import pytest
import requests
from mlflow.genai.scorers import scorer
from mlflow.genai.scorers.builtin_scorers import ResponseLength
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from tests.conftest import client_environment
from tests.stack import NativeStack

pytestmark = pytest.mark.integration

JOBS = "/ajax-api/3.0/jobs"


@scorer
def answer_length(outputs) -> int:
    return len(str(outputs))


def submit(session: requests.Session, stack, experiment_id: str, trace_id: str, judge) -> requests.Response:
    """POST jobs/ for the scorer job (`invoke_scorer`) of `judge` on one trace."""
    params = {
        "experiment_id": experiment_id,
        "serialized_scorer": json.dumps(judge.model_dump()),
        "trace_ids": [trace_id],
    }
    return session.post(
        f"{stack.tracking_uri}{JOBS}/", json={"job_name": "invoke_scorer", "params": params}, timeout=30
    )


@retry(
    retry=retry_if_result(lambda job: job["status"] in ("PENDING", "RUNNING")),
    wait=wait_fixed(0.5),
    stop=stop_after_delay(180),
)
def finished(session: requests.Session, url: str) -> dict:
    return session.get(url, timeout=30).json()


def traced_answer(monkeypatch, stack) -> tuple[str, str]:
    """A trace logged with @mlflow.trace through the stack: (experiment id, trace id)."""
    for name, value in client_environment(stack.settings).items():
        monkeypatch.setenv(name, value)
    mlflow.set_tracking_uri(stack.tracking_uri)
    experiment_id = mlflow.set_experiment(f"jobs-{os.urandom(4).hex()}").experiment_id

    @mlflow.trace
    def answer(question: str) -> str:
        return "forty-two"

    answer("the question")
    mlflow.flush_trace_async_logging()  # the trace is written in the background: a job must find it
    return experiment_id, mlflow.get_last_active_trace_id()


def test_a_scorer_job_runs_and_its_result_is_read_back(mlflow_stack, monkeypatch):
    experiment_id, trace_id = traced_answer(monkeypatch, mlflow_stack)
    with requests.Session() as session:
        session.auth = mlflow_stack.client_auth
        submitted = submit(session, mlflow_stack, experiment_id, trace_id, ResponseLength(max_length=100))
        assert submitted.status_code == 200, submitted.text
        job = finished(session, f"{mlflow_stack.tracking_uri}{JOBS}/{submitted.json()['job_id']}")
    assert job["status"] == "SUCCEEDED", job.get("result")
    assessments = job["result"][trace_id]["assessments"]
    assert [(item["assessment_name"], item["feedback"]["value"]) for item in assessments] == [
        ("response_length", "yes")
    ]
    with mlflow_stack.pg_connect() as connection:
        stored = connection.execute("SELECT name, value FROM assessments WHERE trace_id = %s", (trace_id,)).fetchall()
    assert [(name, json.loads(value)) for name, value in stored] == [("response_length", "yes")]


def test_a_job_that_would_run_submitted_code_is_refused(mlflow_stack, monkeypatch):
    experiment_id, trace_id = traced_answer(monkeypatch, mlflow_stack)
    with requests.Session() as session:
        session.auth = mlflow_stack.client_auth
        refused = submit(session, mlflow_stack, experiment_id, trace_id, answer_length)
    assert refused.status_code == 400 and "MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS" in refused.text


def job_runners(server_pid: int) -> list[psutil.Process]:
    """The job runner's processes under the server's."""
    children = psutil.Process(server_pid).children(recursive=True)
    return [child for child in children if "mlflow.server.jobs" in " ".join(child.cmdline())]


def test_the_job_runner_stops_and_starts_with_the_server(mlflow_stack, monkeypatch):
    if not isinstance(mlflow_stack, NativeStack):
        pytest.skip("in a container the runner goes with the server's container")
    runners = job_runners(mlflow_stack.runtime.processes["mlflow"].pid())
    assert runners, "no job runner under the server"
    mlflow_stack.stop_server()
    _, alive = psutil.wait_procs(runners, timeout=60)
    assert not alive, f"job runner processes outlived the server: {[runner.pid for runner in alive]}"
    mlflow_stack.start_server()
    assert job_runners(mlflow_stack.runtime.processes["mlflow"].pid())
    test_a_scorer_job_runs_and_its_result_is_read_back(mlflow_stack, monkeypatch)


def test_a_reader_cannot_have_a_job_write_into_an_experiment(mlflow_stack, monkeypatch):
    from tests.conftest import run_mlstack

    experiment_id, trace_id = traced_answer(monkeypatch, mlflow_stack)
    reader = ("jobs-reader-" + os.urandom(3).hex(), "reader-password-0123456789")
    added = run_mlstack(
        mlflow_stack.settings.project_dir, "user", "add", reader[0], "--read-only", "--password-stdin", stdin=reader[1]
    )
    assert added.returncode == 0, added.stderr
    with requests.Session() as session:
        session.auth = reader
        refused = submit(session, mlflow_stack, experiment_id, trace_id, ResponseLength(max_length=100))
        assert refused.status_code == 403, refused.text
        assert experiment_id in refused.text
        malformed = session.post(f"{mlflow_stack.tracking_uri}{JOBS}/", data=b"{not json", timeout=30)
        assert malformed.status_code == 400
    with mlflow_stack.pg_connect() as connection:
        assert connection.execute("SELECT count(*) FROM assessments WHERE trace_id = %s", (trace_id,)).fetchone() == (
            0,
        )

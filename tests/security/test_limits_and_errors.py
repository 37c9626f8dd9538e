"""Requests past the limits in .env get 413 or 400 naming the limit, malformed ones a 400 in plain
words (never a 500, never SQL), numbers that do not fit refuse the whole batch, and nothing of a
refused request is written. A worker's memory stays bounded whatever the filter."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.security.conftest import stored

pytestmark = pytest.mark.integration


def test_a_body_past_the_request_limit_is_413_naming_it_even_when_chunked(team, mlflow_stack):
    limit = mlflow_stack.settings.mlstack_max_request_bytes
    body = b'{"experiment_ids": ["0"], "filter": "' + b"a" * limit + b'"}'
    whole = team.request("alice", "POST", "/api/2.0/mlflow/runs/search", data=body, headers=JSON)
    assert whole.status_code == 413 and "MLSTACK_MAX_REQUEST_BYTES" in whole.text and str(limit) in whole.text

    def chunked():
        yield body[:1000]
        yield body[1000:]

    cut = team.request("alice", "POST", "/api/2.0/mlflow/runs/search", data=chunked(), headers=JSON)
    assert cut.status_code == 413 and "MLSTACK_MAX_REQUEST_BYTES" in cut.text


JSON = {"Content-Type": "application/json"}


def test_a_filter_past_its_limit_is_refused_and_the_workers_memory_stays_bounded(team, mlflow_stack):
    limit = mlflow_stack.settings.mlstack_max_filter_length
    resident = worker_memory(mlflow_stack)
    for _ in range(6):
        long = {"experiment_ids": [team.shared_experiment], "filter": f"params.x = '{'a' * (limit - 20)}'"}
        assert team.request("alice", "POST", "/api/2.0/mlflow/runs/search", json=long).status_code == 200
    too_long = {"experiment_ids": [team.shared_experiment], "filter": f"params.x = '{'a' * limit}'"}
    refused = team.request("alice", "POST", "/api/2.0/mlflow/runs/search", json=too_long)
    assert refused.status_code == 400 and "MLSTACK_MAX_FILTER_LENGTH" in refused.text and str(limit) in refused.text
    order = team.request(
        "alice", "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"], "order_by": ["x" * (limit + 1)]}
    )
    assert order.status_code == 400 and "order_by" in order.text
    assert largest_growth(mlflow_stack, resident) < GROWTH_BOUND


def worker_memory(mlflow_stack) -> dict[int, int]:
    """Resident bytes of each MLflow server process."""
    resident = {}
    for pid in mlflow_stack.runtime.server_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        resident[pid] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    return resident


#: How much one server process may grow over a test: a worker's warm-up (its first requests of each
#: kind) stays well within it; one unbounded request (~160 bytes per filter character) does not.
GROWTH_BOUND = 200 * 2**20


def largest_growth(mlflow_stack, before: dict[int, int]) -> int:
    """The most any server process grew since `before` (a process started since counts whole)."""
    return max(now - before.get(pid, 0) for pid, now in worker_memory(mlflow_stack).items())


def test_a_page_past_the_page_size_limit_is_refused(team, mlflow_stack):
    limit = mlflow_stack.settings.mlstack_max_page_size
    answer = team.request(
        "alice", "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"], "max_results": limit + 1}
    )
    assert answer.status_code == 400 and "MLSTACK_MAX_PAGE_SIZE" in answer.text


def offset_token(value) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


#: Requests that answered 500 (or SQL) before: each a 400 in plain words now.
MALFORMED = [
    ("a number too large for a double", {"data": '{"experiment_ids": ["0"], "max_results": 1e400}'}),
    ("JSON nested 1000 deep", {"data": '{"a":' * 1000 + "1" + "}" * 1000}),
    ("a body that is a JSON string", {"data": '"x"'}),
    ("a page token decoding to a list", {"json": {"experiment_ids": ["0"], "page_token": offset_token([1, 2])}}),
    ("a negative page offset", {"json": {"experiment_ids": ["0"], "page_token": offset_token({"offset": -5})}}),
    ("a NUL in a filter", {"json": {"experiment_ids": ["0"], "filter": "params.x = 'a\x00b'"}}),
]


@pytest.mark.parametrize(("what", "request_arguments"), MALFORMED, ids=[what for what, _ in MALFORMED])
def test_malformed_search_requests_get_a_plain_400(team, what, request_arguments):
    headers = JSON if "data" in request_arguments else {}
    answer = team.request("alice", "POST", "/api/2.0/mlflow/runs/search", headers=headers, **request_arguments)
    assert answer.status_code == 400, (what, answer.status_code, answer.text[:300])
    assert_plain(answer.text)


def assert_plain(text: str) -> None:
    for marker in ("SELECT", "[SQL:", "psycopg", "sqlalchemy", "Traceback", "parameters:"):
        assert marker not in text, text[:500]


def test_a_database_error_answer_carries_no_sql(team):
    answer = team.request(
        "alice",
        "POST",
        "/api/2.0/mlflow/runs/search",
        json={"experiment_ids": ["0"], "filter": "attributes.start_time > 99999999999999999999999"},
    )
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert_plain(answer.text)


#: Points of a 1000-point batch's last place that were stored as 0 (or broke the batch half-way).
BAD_POINTS = [
    {"step": 2**64},
    {"step": 2**63},
    {"step": -(2**63) - 1},
    {"timestamp": 1e30},
    {"timestamp": 1.5},
    {"timestamp": True},
    {"step": "1e3"},
    {"value": [1]},
    {"value": {"a": 1}},
    {"value": True},
    {"value": "a lot"},
]


@pytest.mark.parametrize("bad", BAD_POINTS, ids=[json.dumps(bad) for bad in BAD_POINTS])
@pytest.mark.parametrize("route", ["/api/2.0/mlflow/runs/log-batch", "/ajax-api/2.0/mlflow/runs/log-batch"])
def test_a_batch_with_one_number_that_does_not_fit_is_refused_whole(team, mlflow_stack, bad, route):
    points = [{"key": "fit", "value": 1.0, "timestamp": 1, "step": step} for step in range(999)]
    points.append({"key": "fit", "value": 1.0, "timestamp": 1, "step": 999, **bad})
    before = stored(mlflow_stack)
    answer = team.request("bob", "POST", route, json={"run_id": team.shared_run, "metrics": points})
    assert answer.status_code == 400 and "nothing was written" in answer.text, answer.text[:300]
    assert stored(mlflow_stack) == before


def test_a_single_metric_that_does_not_fit_is_refused(team, mlflow_stack):
    before = stored(mlflow_stack)
    body = {"run_id": team.shared_run, "key": "fit", "value": 1.0, "timestamp": 1, "step": 2**64}
    assert team.request("bob", "POST", "/api/2.0/mlflow/runs/log-metric", json=body).status_code == 400
    assert stored(mlflow_stack) == before


def test_server_info_needs_a_login_and_health_does_not(team):
    assert team.request("anonymous", "GET", "/api/3.0/mlflow/server-info").status_code == 401
    assert team.request("anonymous", "GET", "/ajax-api/3.0/mlflow/server-info").status_code == 401
    assert team.request("alice", "GET", "/api/3.0/mlflow/server-info").status_code == 200
    assert team.request("anonymous", "GET", "/health").status_code == 200


def test_the_artifact_stores_root_is_listed_to_nobody_and_paths_stay_inside_an_experiment(team, mlflow_stack):
    before = stored(mlflow_stack)
    for who in ("alice", "bob", "admin"):
        root = team.request(who, "GET", "/api/2.0/mlflow-artifacts/artifacts")
        assert root.status_code == 403 and team.denied_experiment not in root.text, root.text[:200]
    artifacts = f"/api/2.0/mlflow-artifacts/artifacts/{team.shared_experiment}/{team.shared_run}/artifacts"
    for path in ("a\\b.txt", "%2E%2E/%2E%2E/x.txt", "%2E/x.txt"):  # encoded: clients drop plain dot segments
        answer = team.request("bob", "PUT", f"{artifacts}/{path}", data=b"x")
        assert answer.status_code in (400, 404), (path, answer.status_code, answer.text[:200])
    denied = f"/api/2.0/mlflow-artifacts/artifacts/{team.denied_experiment}/{team.denied_run}/artifacts/x.txt"
    assert team.request("bob", "PUT", denied, data=b"x").status_code == 403
    listing = team.request("bob", "GET", "/api/2.0/mlflow-artifacts/artifacts", params={"path": team.denied_experiment})
    assert listing.status_code == 403
    assert stored(mlflow_stack) == before
    allowed = team.request("bob", "PUT", f"{artifacts}/notes.txt", data=b"bob's")
    assert allowed.status_code == 200

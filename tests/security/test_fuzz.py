"""Property-based fuzzing of the two busiest request bodies against the live server: log-batch and
search-runs answer 2xx or 4xx, never 5xx; a refused batch writes nothing and an accepted one writes
every point; the workers' memory stays bounded."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.test_limits_and_errors import GROWTH_BOUND, largest_growth, worker_memory

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

#: Anything JSON can hold, a little of each.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
numbers_or_not = (
    int64s | st.integers() | st.floats().map(lambda x: x if x == x and abs(x) != float("inf") else 0.5) | json_values
)
values = (
    st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["NaN", "Infinity", "-Infinity"]) | json_values
)


@st.composite
def batches(draw):
    """A log-batch body: up to 40 points with distinct steps (so an accepted batch adds one row each),
    some fields hostile, sometimes a stray field or a hostile run id."""
    points = []
    for index in range(draw(st.integers(0, 40))):
        point = {"key": draw(st.sampled_from(["loss", "acc", "a b", "", "x" * 300])), "value": draw(values)}
        point["timestamp"] = draw(st.one_of(st.just(1_700_000_000_000 + index), numbers_or_not))
        point["step"] = draw(st.one_of(st.just(index), numbers_or_not))
        points.append(point)
    body = {"metrics": points}
    if draw(st.booleans()):
        body[draw(st.sampled_from(["params", "tags", "model_id", "extra"]))] = draw(json_values)
    return body


@st.composite
def searches(draw):
    body = {
        "experiment_ids": draw(
            st.lists(st.one_of(st.sampled_from(["0", "1", "01", " 1", "-1"]), st.text(max_size=5)), max_size=3)
        )
    }
    for field, strategy in (
        (
            "filter",
            st.one_of(
                st.text(max_size=60),
                st.sampled_from(["metrics.loss < 1", "params.x = 'y'", "attributes.status = 'FINISHED'"]),
            ),
        ),
        ("order_by", st.lists(st.text(max_size=20), max_size=2)),
        ("max_results", st.one_of(st.integers(), json_values)),
        (
            "page_token",
            st.one_of(
                st.text(max_size=20), st.binary(max_size=12).map(lambda b: __import__("base64").b64encode(b).decode())
            ),
        ),
        ("run_view_type", st.sampled_from(["ACTIVE_ONLY", "ALL", "DELETED_ONLY", "nope"])),
    ):
        if draw(st.booleans()):
            body[field] = draw(strategy)
    return body


def metric_rows(mlflow_stack, run_id: str) -> int:
    with mlflow_stack.pg_connect() as connection:
        return connection.execute("SELECT count(*) FROM metrics WHERE run_uuid = %s", (run_id,)).fetchone()[0]


@pytest.fixture(scope="module")
def fuzz_run(team) -> str:
    answer = team.request("bob", "POST", "/api/2.0/mlflow/runs/create", json={"experiment_id": team.shared_experiment})
    return answer.json()["run"]["info"]["run_id"]


def test_log_batch_answers_4xx_or_writes_every_point(team, mlflow_stack, fuzz_run):
    resident = worker_memory(mlflow_stack)
    seen_steps: set = set()

    @FUZZ
    @given(body=batches())
    def one(body):
        before = metric_rows(mlflow_stack, fuzz_run)
        answer = team.request("bob", "POST", "/api/2.0/mlflow/runs/log-batch", json={"run_id": fuzz_run, **body})
        assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
        added = metric_rows(mlflow_stack, fuzz_run) - before
        if answer.status_code >= 400:
            assert added == 0, (body, answer.text[:200])
        else:
            fresh = {(p["key"], p["timestamp"], p["step"]) for p in body["metrics"]} - seen_steps
            assert added == len(fresh), (body, added)
            seen_steps.update(fresh)

    one()
    assert largest_growth(mlflow_stack, resident) < GROWTH_BOUND


def test_search_runs_answers_2xx_or_4xx(team, mlflow_stack):
    resident = worker_memory(mlflow_stack)

    @FUZZ
    @given(body=searches())
    def one(body):
        answer = team.request("alice", "POST", "/api/2.0/mlflow/runs/search", json=body)
        assert answer.status_code < 500, (body, answer.status_code, answer.text[:300])
        assert "SELECT" not in answer.text and "[SQL:" not in answer.text, answer.text[:300]

    one()
    assert largest_growth(mlflow_stack, resident) < GROWTH_BOUND

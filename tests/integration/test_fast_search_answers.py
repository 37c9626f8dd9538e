"""runs/search answered from the fast store's rows (search.py `search_run_answers`, routes.py) without
`Run` entities or protobuf: byte for byte the fast store's answer through its entities and protojson,
and as a request, the JSON value MLflow's handler gives on MLflow's own store (seeded runs of
test_fast_search: NaN, infinities, datasets, nameless and deleted runs, every view, pages)."""

from __future__ import annotations

import json
import random

import pytest
from flask import Flask
from mlflow.entities import ViewType
from mlflow.server import handlers
from mlstack_mlflow_store import protojson, routes
from mlstack_mlflow_store.search import search_run_answers

from tests.integration import test_fast_search
from tests.integration.test_fast_search import FILTERS, ORDERS

pytestmark = pytest.mark.integration

# test_fast_search's fixtures: MLflow's store and the fast one, and its seeded experiment
stores, experiment_id = test_fast_search.stores, test_fast_search.experiment_id

SEARCH = "/api/2.0/mlflow/runs/search"


def answer_pages(fast, experiment, filter_string, view, order_by, page_size) -> list[str]:
    """Every page of the search as runs/search's JSON, from the rows."""
    pages, token = [], None
    while True:
        runs, token = search_run_answers(fast, [experiment], filter_string, view, page_size, order_by, token)
        pages.append(json.dumps({"runs": runs, "next_page_token": token}, separators=(",", ":")))
        if not token:
            return pages


def entity_pages(fast, experiment, filter_string, view, order_by, page_size) -> list[str]:
    """The same pages through the fast store's `Run` entities, `to_proto` and protojson."""
    pages, token = [], None
    while True:
        page = fast.search_runs([experiment], filter_string, view, page_size, order_by, token)
        runs = [protojson.message_to_dict(run.to_proto()) for run in page]
        token = page.token.decode() if page.token else None  # MLflow's tokens are bytes, its answers text
        pages.append(json.dumps({"runs": runs, "next_page_token": token}, separators=(",", ":")))
        if not token:
            return pages


@pytest.mark.parametrize("seed", range(4))
def test_answers_from_rows_are_the_entities_answers_byte_for_byte(stores, experiment_id, seed):
    _, fast = stores
    generator = random.Random(seed)
    for _ in range(10):
        query = (
            generator.choice(FILTERS),
            generator.choice([ViewType.ACTIVE_ONLY, ViewType.DELETED_ONLY, ViewType.ALL]),
            generator.choice(ORDERS),
            generator.choice([1, 7, 50, 1000]),
        )
        assert answer_pages(fast, experiment_id, *query) == entity_pages(fast, experiment_id, *query), query


@pytest.fixture(scope="module")
def search_clients():
    """Test clients of Flask apps serving MLflow's search-runs handler and the plugin's route."""
    clients = []
    for view in (handlers._search_runs, routes.search_runs):
        app = Flask(view.__module__)
        app.add_url_rule(SEARCH, routes.SEARCH_RUNS_ENDPOINT, view, methods=["POST"])
        clients.append(app.test_client())
    return clients


def normalized(answer: dict) -> dict:
    """An answer with the collections MLflow's store returns in no set order sorted."""
    for run in answer.get("runs", []):
        for field in ("metrics", "params", "tags"):
            run["data"].get(field, []).sort(key=lambda item: item["key"])
        run["inputs"].get("dataset_inputs", []).sort(key=repr)
    return answer


@pytest.mark.parametrize(
    "request_body",
    [
        {},
        {"max_results": 7},
        {"max_results": 100, "order_by": ["attributes.start_time DESC"], "run_view_type": "ACTIVE_ONLY"},
        {"order_by": ["metrics.rmse ASC", "params.alpha DESC"], "max_results": 30, "run_view_type": "ALL"},
        {"filter": "metrics.rmse > 1 and tags.team = 'vision'", "run_view_type": "DELETED_ONLY"},
        {"filter": "dataset.name = 'train'"},
        {"max_results": 50001},
        {"filter": "metrics.rmse >>> 1"},
        {"page_token": "not-a-token"},
    ],
)
def test_the_route_answers_mlflows_json(search_clients, stores, experiment_id, request_body, monkeypatch):
    """The plugin's route on the fast store, and MLflow's handler on MLflow's store, page by page."""
    (mlflow_client, fast_client), (upstream, fast) = search_clients, stores
    body = {"experiment_ids": [experiment_id], **request_body}

    def post(client, store):
        monkeypatch.setattr(handlers, "_get_tracking_store", lambda *args, **kwargs: store)
        return client.post(SEARCH, json=body)

    while True:
        expected, answer = post(mlflow_client, upstream), post(fast_client, fast)
        assert (answer.status_code, answer.mimetype) == (expected.status_code, expected.mimetype)
        assert normalized(answer.get_json()) == normalized(expected.get_json())
        token = expected.get_json().get("next_page_token")
        if not token:
            break
        body = {**body, "page_token": token}

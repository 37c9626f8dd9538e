"""An experiment id written another way must not reach a denied experiment: every form the store
would read as the same number ('01', ' 1', '+1', '١', ...) is refused 400 on every route family
(REST 2.0, the UI's ajax routes, query strings, camelCase bodies, nested v3 bodies, GraphQL
arguments and variables, artifact paths), for every identity, and nothing is written."""

from __future__ import annotations

import json

import pytest

from tests.security.conftest import Team, stored

pytestmark = pytest.mark.integration

#: The forms the attack used; each is int()'d to the canonical id by the store.
FORMS = ["0{}", "00{}", " {}", "{} ", "+{}", "{}\n", "\t{}", "{}\u00a0"]
ARABIC_DIGITS = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def forms(experiment_id: str) -> list[str]:
    return [form.format(experiment_id) for form in FORMS] + [experiment_id.translate(ARABIC_DIGITS)]


def reads(experiment_id: str) -> list[tuple[str, str, dict]]:
    """(method, path, request arguments) reading the experiment, one per route family."""
    graphql_runs = "query { mlflowSearchRuns(input: {experimentIds: [%s]}) { runs { info { runId } } } }"
    graphql_get = "query($id: String) { mlflowGetExperiment(input: {experimentId: $id}) { experiment { name } } }"
    return [
        ("POST", "/api/2.0/mlflow/runs/search", {"json": {"experiment_ids": [experiment_id]}}),
        ("POST", "/ajax-api/2.0/mlflow/runs/search", {"json": {"experiment_ids": [experiment_id]}}),
        ("POST", "/api/2.0/mlflow/runs/search", {"json": {"experimentIds": [experiment_id]}}),
        ("GET", "/api/2.0/mlflow/experiments/get", {"params": {"experiment_id": experiment_id}}),
        ("GET", "/ajax-api/2.0/mlflow/experiments/get", {"params": {"experiment_id": experiment_id}}),
        ("POST", "/api/2.0/mlflow/logged-models/search", {"json": {"experiment_ids": [experiment_id]}}),
        (
            "POST",
            "/api/3.0/mlflow/traces/search",
            {
                "json": {
                    "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}]
                }
            },
        ),
        ("POST", "/graphql", {"json": {"query": graphql_runs % json.dumps(experiment_id)}}),
        ("POST", "/graphql", {"json": {"query": graphql_get, "variables": {"id": experiment_id}}}),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts", {"params": {"path": experiment_id}}),
    ]


def writes(experiment_id: str, run_id: str) -> list[tuple[str, str, dict]]:
    return [
        ("POST", "/api/2.0/mlflow/runs/create", {"json": {"experiment_id": experiment_id}}),
        ("POST", "/ajax-api/2.0/mlflow/runs/create", {"json": {"experiment_id": experiment_id}}),
        (
            "POST",
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            {"json": {"experiment_id": experiment_id, "key": "owned", "value": "by bob"}},
        ),
        ("POST", "/api/2.0/mlflow/experiments/update", {"json": {"experiment_id": experiment_id, "new_name": "bobs"}}),
        ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/x.txt", {"data": b"bob"}),
    ]


def leaks(answer, team: Team) -> bool:
    return team.denied_run in answer.text or "secret_" in answer.text


@pytest.mark.parametrize("who", ["alice", "bob", "admin"])
def test_every_other_spelling_of_an_experiment_id_is_refused_on_every_route_family(team, mlflow_stack, who):
    before = stored(mlflow_stack)
    for form in forms(team.denied_experiment):
        for method, path, arguments in reads(form) + writes(form, team.denied_run):
            answer = team.request(who, method, path, **arguments)
            if form in path and answer.status_code == 404:  # whitespace in a URL path: no route matches it
                continue
            assert answer.status_code == 400, (who, method, path, repr(form), answer.status_code, answer.text[:200])
            assert "not an experiment id as the store writes it" in answer.text
            assert not leaks(answer, team)
    assert stored(mlflow_stack) == before


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_the_deny_holds_for_the_canonical_id_on_every_route_family(team, mlflow_stack, who):
    """Reads answer 403 or nothing of the experiment (searches leave it out); writes answer 403."""
    before = stored(mlflow_stack)
    for method, path, arguments in reads(team.denied_experiment):
        answer = team.request(who, method, path, **arguments)
        assert answer.status_code in (200, 403), (who, method, path, answer.status_code, answer.text[:200])
        assert not leaks(answer, team), (who, method, path, answer.text[:300])
    for method, path, arguments in writes(team.denied_experiment, team.denied_run):
        answer = team.request(who, method, path, **arguments)
        assert answer.status_code == 403, (who, method, path, answer.status_code, answer.text[:200])
    assert stored(mlflow_stack) == before


@pytest.mark.parametrize("who", ["anonymous", "wrong password"])
def test_without_a_valid_login_nothing_answers_but_401(team, mlflow_stack, who):
    before = stored(mlflow_stack)
    for experiment_id in (team.denied_experiment, team.shared_experiment):
        for method, path, arguments in reads(experiment_id) + writes(experiment_id, team.denied_run):
            answer = team.request(who, method, path, **arguments)
            assert answer.status_code == 401, (who, method, path, answer.status_code, answer.text[:200])
    assert stored(mlflow_stack) == before


def test_the_admin_and_bob_reach_what_they_may_with_the_canonical_id(team):
    admin = team.request(
        "admin", "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [team.denied_experiment]}
    )
    assert admin.status_code == 200 and team.denied_run in admin.text
    bob = team.request("bob", "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [team.shared_experiment]})
    assert bob.status_code == 200 and team.shared_run in bob.text

"""The server's login check (services/mlflow-server/store auth.py) when the user database fails: an
unknown person is refused with 401, a database that does not answer gets 503 (clients retry it)
rather than a 401 that calls a good login wrong (found in the ha topology's failover drill)."""

from __future__ import annotations

import pytest
from flask import Flask
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.server import auth as mlflow_auth
from mlstack_mlflow_store import auth

LOGIN = {"Authorization": "Basic YWxpY2U6c2VjcmV0LXBhc3N3b3Jk"}  # alice:secret-password


def check_with_user_store_raising(monkeypatch, error_code: str):
    class FailingStore:
        def get_user(self, username):
            code = databricks_pb2.ErrorCode.Value(error_code)
            raise MlflowException(f"user {username}: {error_code}", error_code=code)

    monkeypatch.setattr(mlflow_auth, "store", FailingStore())
    with Flask(__name__).test_request_context("/api/2.0/mlflow/runs/get", headers=LOGIN):
        return auth.authenticate_request_basic_auth()


def test_an_unknown_person_is_refused_with_401(monkeypatch):
    answer = check_with_user_store_raising(monkeypatch, "RESOURCE_DOES_NOT_EXIST")
    assert answer.status_code == 401


@pytest.mark.parametrize("error_code", ["TEMPORARILY_UNAVAILABLE", "BAD_REQUEST"])
def test_a_user_database_that_does_not_answer_gets_503_to_retry(monkeypatch, error_code):
    answer = check_with_user_store_raising(monkeypatch, error_code)
    assert answer.status_code == 503 and "Retry-After" not in answer.headers
    assert answer.get_json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert error_code in answer.get_json()["message"]

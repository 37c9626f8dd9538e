"""The ClearML stack for real (docker tier): infra/clearml up with the agent, then bootstrap,
online tracking, registry, offline sync, the pipeline on the agent and refused logins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from mlstack.runtime.docker import engine_answers
from mlstack.secrets import init_env
from mlstack.settings import SECRET_FIELDS, Settings

PROJECT_DIR = Path(__file__).resolve().parents[2]


pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not engine_answers(), reason="no Docker engine answers; the ClearML stack needs one"),
]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A scratch checkout with generated secrets; the stack runs from the repository's infra/clearml."""
    root = tmp_path_factory.mktemp("clearml-stack")
    shutil.copy(PROJECT_DIR / ".env.example", root / ".env.example")
    init_env(root / ".env", root / ".env.example", [name.upper() for name in SECRET_FIELDS])
    return root


@pytest.fixture(scope="module")
def stack(checkout):
    from testcontainers.compose import DockerCompose

    compose = DockerCompose(
        context=str(PROJECT_DIR / "infra" / "clearml"),
        compose_file_name="compose.yaml",
        env_file=str(checkout / ".env"),
        profiles=["agent"],
        build=True,
        wait=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        # a project of its own, so the tests never touch a ClearML stack the user runs
        patch.setenv("COMPOSE_PROJECT_NAME", "mlstack-clearml-test")
        compose.start()
        try:
            yield compose
        finally:
            compose.stop()


@pytest.fixture(scope="module")
def sdk_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("clearml-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(root))
        patch.setenv("CLEARML_CACHE_DIR", str(root / "cache"))
        yield root


def load(checkout: Path) -> Settings:
    return Settings(MLSTACK_PROJECT_DIR=checkout, MLSTACK_STATE_DIR=checkout / "state", _env_file=checkout / ".env")


@pytest.fixture(scope="module")
def bootstrapped(stack, checkout, sdk_home) -> Settings:
    from mlstack.bootstrap.clearml import clearml_steps
    from mlstack.bootstrap.steps import run_steps

    run_steps(clearml_steps(), load(checkout), lambda result: None)
    return load(checkout)


def login(settings: Settings, auth=None) -> requests.Response:
    return requests.post(f"{settings.clearml_api_url}/auth.login", json={}, auth=auth, timeout=10)


def test_bootstrap_creates_working_credentials_and_reuses_them(bootstrapped, checkout):
    from mlstack.bootstrap.clearml import ensure_client_credentials
    from mlstack.bootstrap.steps import Outcome

    key, secret = bootstrapped.clearml_api_access_key, bootstrapped.clearml_api_secret_key.get_secret_value()
    assert login(bootstrapped, (key, secret)).status_code == 200
    assert ensure_client_credentials(load(checkout)).outcome is Outcome.PRESENT
    assert load(checkout).clearml_api_access_key == key


def test_login_without_or_with_wrong_credentials_is_refused(bootstrapped):
    assert login(bootstrapped).status_code == 401
    assert login(bootstrapped, (bootstrapped.clearml_fixed_user, "wrong-password")).status_code == 401
    assert login(bootstrapped, ("WRONGKEY0000000000000000000000", "wrong-secret")).status_code == 401
    password = bootstrapped.clearml_fixed_user_password.get_secret_value()
    assert login(bootstrapped, (bootstrapped.clearml_fixed_user, password)).status_code == 200


def test_agent_keys_from_env_log_in(bootstrapped):
    key = bootstrapped.clearml_agent_access_key.get_secret_value()
    assert login(bootstrapped, (key, bootstrapped.clearml_agent_secret_key.get_secret_value())).status_code == 200


def test_tracker_logs_online_and_the_model_is_found(bootstrapped, tmp_path):
    from clearml import Task

    from mlstack.tracking.clearml import ClearMLTracker, compare_clearml_experiments, compare_registered_models

    weights = tmp_path / "ridge.joblib"
    weights.write_bytes(b"ridge weights")
    cfg = {"clearml": {"project": "mlstack-docker-test"}}
    with ClearMLTracker(cfg, stage="train", settings=bootstrapped) as tracker:
        tracker.connect_dict("train_params", {"alpha": 0.5})
        tracker.log_metrics({"val_rmse": 4.2}, series="validation", iteration=0)
        model_id = tracker.register_model(weights, "docker-test-ridge", metadata={"val_rmse": 4.2})
    assert not tracker.offline
    task = Task.get_task(task_id=tracker.task_id)
    assert task.get_last_scalar_metrics()["val_rmse"]["validation"]["last"] == pytest.approx(4.2)
    experiments = compare_clearml_experiments("mlstack-docker-test", "val_rmse", settings=bootstrapped)
    assert tracker.task_id in set(experiments["task_id"])
    models = compare_registered_models("docker-test-ridge", "mlstack-docker-test", settings=bootstrapped)
    assert model_id in set(models["model_id"])
    assert float(models.set_index("model_id").loc[model_id, "val_rmse"]) == pytest.approx(4.2)


def test_offline_session_syncs_once(bootstrapped):
    from clearml import Task

    from mlstack.tracking.clearml import ClearMLTracker, sync_offline_sessions

    cfg = {"clearml": {"project": "mlstack-docker-test", "offline": True}}
    with ClearMLTracker(cfg, stage="offline-train", settings=bootstrapped) as tracker:
        tracker.log_metrics({"val_rmse": 3.3}, series="validation", iteration=0)
    report = sync_offline_sessions(bootstrapped)
    server_id = report.synced[tracker.task_id]
    scalars = Task.get_task(task_id=server_id).get_last_scalar_metrics()
    assert scalars["val_rmse"]["validation"]["last"] == pytest.approx(3.3)
    assert sync_offline_sessions(bootstrapped).synced == {}


def test_pipeline_runs_to_completion_on_the_agent(bootstrapped):
    from mlstack.tracking.clearml.monitoring import read_pipeline_status
    from mlstack.tracking.clearml.pipeline import run_pipeline

    pipeline_id = run_pipeline(bootstrapped, project="mlstack-docker-test", where="agent")
    status = read_pipeline_status(pipeline_id)
    assert status.status == "completed", status
    expected = {"prepare", "train_linear", "train_ridge", "train_random_forest", "select_best", "evaluate"}
    assert expected <= set(status.steps)
    assert all(status.steps[name] == "completed" for name in expected), status.steps

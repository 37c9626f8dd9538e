"""The ClearML stack for real (docker tier): infra/clearml up with the agent, then bootstrap,
online tracking, the registry from a second client, dataset chains, offline sync with a registered
model, the pipeline locally and on the agent (its registered models loaded by a second client, its
files opened from the host), `mlstack demo`, refused logins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def test_offline_session_with_a_registered_model_syncs_once(bootstrapped, tmp_path):
    from clearml import Model, Task

    from mlstack.tracking.clearml import ClearMLTracker, sync_offline_sessions

    weights = tmp_path / "offline.joblib"
    weights.write_bytes(b"offline weights")
    cfg = {"clearml": {"project": "mlstack-docker-test", "offline": True}}
    with ClearMLTracker(cfg, stage="offline-train", settings=bootstrapped) as tracker:
        tracker.log_metrics({"val_rmse": 3.3}, series="validation", iteration=0)
        tracker.register_model(weights, "docker-test-offline", metadata={"val_rmse": 3.3, "trees": 10})
    report = sync_offline_sessions(bootstrapped)
    assert report.failed == {}
    server_id = report.synced[tracker.task_id]
    scalars = Task.get_task(task_id=server_id).get_last_scalar_metrics()
    assert scalars["val_rmse"]["validation"]["last"] == pytest.approx(3.3)
    (model,) = Model.query_models(project_name="mlstack-docker-test", model_name="docker-test-offline")
    assert model.url.startswith(bootstrapped.clearml_files_url)
    assert sync_offline_sessions(bootstrapped).synced == {}
    assert len(Task.get_tasks(project_name="mlstack-docker-test", task_name="offline-train")) == 1


#: Run by a second Python process with its own empty SDK cache: another machine, as far as the SDK sees.
_LOAD_ELSEWHERE = """
import sys
from mlstack.settings import Settings
from mlstack.tracking.clearml.registry import load_model
print(open(load_model(sys.argv[1], settings=Settings.load()), "rb").read().decode())
"""


def second_client_env(checkout: Path, home: Path) -> dict[str, str]:
    """A process of the project at `checkout` with its own HOME and an empty SDK cache."""
    return {
        **os.environ,
        "HOME": str(home),
        "CLEARML_CACHE_DIR": str(home / "cache"),
        "MLSTACK_PROJECT_DIR": str(checkout),
        "MLSTACK_STATE_DIR": str(checkout / "state"),
    }


def test_registered_weights_load_from_a_second_client_after_the_file_is_gone(bootstrapped, checkout, tmp_path):
    from mlstack.tracking.clearml.registry import register_model

    weights = tmp_path / "second-client.joblib"
    weights.write_bytes(b"weights seen elsewhere")
    register_model(weights, "docker-test-second-client", "mlstack-docker-test", settings=bootstrapped)
    weights.unlink()
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_ELSEWHERE, "docker-test-second-client"],
        env=second_client_env(checkout, tmp_path / "elsewhere"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("weights seen elsewhere")


def test_dataset_versions_chain_each_to_the_one_before(bootstrapped, tmp_path):
    from clearml import Dataset

    from mlstack.tracking.clearml.datasets import create_dataset_version, list_dataset_versions

    name = "sales (v2)+eu.*"  # regex characters must not match other datasets or fail to match itself
    ids = []
    for number in range(3):
        data = tmp_path / f"v{number}"
        data.mkdir()
        (data / "rows.csv").write_text(f"id,value\n{number},{number * 10}\n")
        ids.append(create_dataset_version(name, "mlstack-docker-test", [data], settings=bootstrapped))
    assert list(Dataset.get(dataset_id=ids[1])._get_parents()) == [ids[0]]
    assert list(Dataset.get(dataset_id=ids[2])._get_parents()) == [ids[1]]
    assert list(list_dataset_versions("mlstack-docker-test", name, settings=bootstrapped)["id"]) == ids[::-1]


PIPELINE_STEPS = {"prepare", "train_linear", "train_ridge", "train_random_forest", "select_best", "evaluate"}


@pytest.fixture(scope="module")
def pipeline_runs(bootstrapped) -> dict[str, str]:
    """The pipeline run here and on the agent, each into a project of its own: where -> controller id."""
    from mlstack.tracking.clearml.pipeline import run_pipeline

    return {
        where: run_pipeline(bootstrapped, project=f"mlstack-docker-test-{where}", where=where)
        for where in ("local", "agent")
    }


@pytest.mark.parametrize("where", ["local", "agent"])
def test_pipeline_runs_to_completion(pipeline_runs, where):
    from mlstack.tracking.clearml.monitoring import read_pipeline_status

    status = read_pipeline_status(pipeline_runs[where])
    assert status.status == "completed", status
    assert set(status.steps) >= PIPELINE_STEPS
    assert all(status.steps[name] == "completed" for name in PIPELINE_STEPS), status.steps


#: Another machine: the newest version of a model name in a project, downloaded, unpickled, predicting.
_PREDICT_ELSEWHERE = """
import pickle, sys
from sklearn.datasets import load_diabetes
from mlstack.settings import Settings
from mlstack.tracking.clearml.registry import load_model
model = pickle.loads(load_model(sys.argv[1], project_name=sys.argv[2], settings=Settings.load()).read_bytes())
print(len(model.predict(load_diabetes(return_X_y=True)[0])))
"""


@pytest.mark.parametrize("where", ["local", "agent"])
def test_pipeline_registers_its_models_and_the_best_loads_on_another_machine(
    bootstrapped, checkout, pipeline_runs, where, tmp_path
):
    from clearml import Model, Task

    from mlstack.tracking.clearml.pipeline import MODEL_BASE_NAME, MODEL_KINDS

    project, pipeline_id = f"mlstack-docker-test-{where}", pipeline_runs[where]
    steps = {task.name: task for task in Task.get_tasks(task_filter={"parent": pipeline_id})}
    registered = {f"train_{kind}": f"{MODEL_BASE_NAME}-{kind}" for kind in MODEL_KINDS}
    registered["select_best"] = f"{MODEL_BASE_NAME}-best"
    for step, name in registered.items():
        newest = Model.query_models(project_name=project, model_name=name)[0]
        assert newest.task == steps[step].id, name
        assert [model.id for model in steps[step].models["output"]] == [newest.id], name
        assert newest.get_metadata("pipeline_id") == pipeline_id, name
        assert float(newest.get_metadata("val_rmse")) > 0, name
        assert newest.url.startswith(bootstrapped.clearml_output_destination + "/"), newest.url
    best = Model.query_models(project_name=project, model_name=f"{MODEL_BASE_NAME}-best")[0]
    assert best.get_metadata("model_kind") in MODEL_KINDS
    result = subprocess.run(
        [sys.executable, "-c", _PREDICT_ELSEWHERE, f"{MODEL_BASE_NAME}-best", project],
        env=second_client_env(checkout, tmp_path / "elsewhere"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("442")  # a prediction for every row of the diabetes set


def test_files_the_agent_uploaded_open_from_the_host(bootstrapped):
    """Step outputs the agent uploaded are recorded under the host's files URL and download from here."""
    from clearml import Task

    tasks = Task.get_tasks(project_name="mlstack-docker-test-agent", task_name="prepare")
    assert tasks, "run the agent pipeline test first (same module)"
    urls = [artifact.url for task in tasks for artifact in task.artifacts.values() if artifact.url]
    assert urls and all(url.startswith(bootstrapped.clearml_files_url) for url in urls), urls
    token = requests.post(
        f"{bootstrapped.clearml_api_url}/auth.login",
        auth=(bootstrapped.clearml_api_access_key, bootstrapped.clearml_api_secret_key.get_secret_value()),
        timeout=10,
    ).json()["data"]["token"]
    response = requests.get(urls[0], headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200 and response.content


def test_the_fileserver_refuses_a_plain_get_and_mlstack_clearml_download_fetches_it(
    bootstrapped, pipeline_runs, tmp_path
):
    """docs/clearml.md's download: without a login the fileserver answers 401; the command logs in."""
    from clearml import Task

    from tests.conftest import run_mlstack

    tasks = Task.get_tasks(project_name="mlstack-docker-test-agent", task_name="prepare")
    url = next(artifact.url for task in tasks for artifact in task.artifacts.values() if artifact.url)
    assert requests.get(url, timeout=30).status_code == 401
    result = run_mlstack(bootstrapped.project_dir, "clearml", "download", url, "--to", str(tmp_path / "artifact"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "artifact").stat().st_size > 0


def test_demo_records_a_dataset_version_a_task_and_the_champion_in_clearml(bootstrapped, checkout, sdk_home):
    """`mlstack demo` as a user runs it after `make up` and `make bootstrap-credentials` (MLflow here
    goes to the local store: this module runs no MLflow stack)."""
    from clearml import Model, Task

    from mlstack.demo import ALIAS, EXPERIMENT, MODEL_NAME
    from mlstack.tracking.clearml.datasets import list_dataset_versions
    from tests.conftest import user_environment

    demo = subprocess.run(
        [sys.executable, "-m", "mlstack.cli", "demo"],
        cwd=checkout,
        env=user_environment(sdk_home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "ClearML offline" not in demo.stdout + demo.stderr
    tasks = Task.get_tasks(project_name=EXPERIMENT, task_filter={"status": ["completed"]})
    (task,) = [task for task in tasks if task.name.startswith("demo ")]
    lines = task.get_reported_scalars()["val_rmse"]
    assert len(lines) == 10, sorted(lines)
    assert {"plots/val_rmse_per_run.png", "plots/champion_residuals.png", "reports/runs.csv"} <= set(task.artifacts)
    assert len(list_dataset_versions(EXPERIMENT, "diabetes", settings=bootstrapped)) == 1
    (model,) = Model.query_models(project_name=EXPERIMENT, model_name=MODEL_NAME, only_published=False)
    assert model.config_dict["alias"] == ALIAS and model.url.startswith(bootstrapped.clearml_files_url)


def test_backup_and_restore_bring_back_every_task_model_and_event(bootstrapped, checkout, tmp_path):
    """`mlstack backup --stack clearml` twice, then `mlstack restore --force` of the second onto the same
    stack: MongoDB, Elasticsearch and the fileserver come back with the counts of the archive."""
    from rich.console import Console

    from mlstack.maintenance.clearml import clearml_counts, data_version
    from mlstack.runtime.docker import DockerRuntime
    from tests.conftest import run_mlstack

    if not (checkout / "infra").exists():
        (checkout / "infra").symlink_to(PROJECT_DIR / "infra")
    runtime = DockerRuntime(load(checkout), Console(stderr=True), "clearml")
    before = clearml_counts(runtime)
    assert before["tasks"] > 0, "the tests above made tasks"
    for attempt in ("first", "second"):  # a second backup must not trip over the first one's snapshot
        output = str(tmp_path / attempt)
        backed_up = run_mlstack(checkout, "backup", "--stack", "clearml", "--output", output, "--runtime", "docker")
        assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    (archive,) = (tmp_path / "second").glob("mlstack-clearml-*.tar")
    refused = run_mlstack(checkout, "restore", str(archive), "--runtime", "docker")
    assert refused.returncode != 0 and "is not empty" in refused.stdout + refused.stderr
    restored = run_mlstack(checkout, "restore", str(archive), "--force", "--runtime", "docker")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert clearml_counts(runtime) == before
    assert data_version(runtime) == "2.3.0"
    assert (
        login(
            bootstrapped, (bootstrapped.clearml_api_access_key, bootstrapped.clearml_api_secret_key.get_secret_value())
        ).status_code
        == 200
    )

"""Each pipeline step as ClearML runs it: the script the SDK builds from the step function
(`CreateFromFunction.create_task_from_function(..., dry_run=True)`, as PipelineController does) must
compile and, run in a fresh interpreter without mlstack, do the step's work on real data and register
its models: online against a stand-in apiserver and fileserver, offline into the session's zip."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

import pytest
from clearml import Task
from clearml.backend_interface.task.populate import CreateFromFunction
from clearml_helpers import online_settings
from fake_apiserver import SDK_KEY, SDK_SECRET, shared_servers
from sklearn.metrics import mean_squared_error

from mlstack.tracking.clearml import pipeline
from mlstack.tracking.clearml.offline import sessions_dir, sync_offline_sessions
from mlstack.tracking.clearml.pipeline import (
    MODEL_BASE_NAME,
    MODEL_KINDS,
    STEP_PACKAGES,
    build_pipeline,
    pipeline_steps,
    step_packages,
)
from mlstack.tracking.clearml.pipeline_steps import prepare, register_step_model
from mlstack.tracking.environment import clearml_offline_mode_kept

TRAIN_STEPS = tuple(f"train_{kind}" for kind in MODEL_KINDS)


@pytest.fixture(scope="module")
def built_scripts(isolated_sdk) -> dict[str, str]:
    """Every step's script, built by the SDK offline (no server is needed to build one; the trackers
    and sync choose offline or online for themselves, so the mode is not restored, but the variable the
    switch exports is: sync would read it as the user asking for offline mode)."""
    with clearml_offline_mode_kept():
        Task.set_offline(True)
    return {
        step.name: CreateFromFunction.create_task_from_function(
            step.function,
            function_kwargs=step.function_kwargs or None,
            function_return=list(step.function_return),
            project_name="mlstack-pipeline-test",
            task_name=step.name,
            packages=step_packages(),
            helper_functions=list(step.helper_functions) or None,
            dry_run=True,
        )["script"]["diff"]
        for step in pipeline_steps()
    }


@pytest.fixture(scope="module")
def scripts_dir(built_scripts, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("step-scripts")
    for name, script in built_scripts.items():
        (folder / f"{name}.py").write_text(script)
    return folder


@pytest.fixture(scope="module")
def servers(isolated_sdk):
    return shared_servers()


@pytest.fixture(scope="module")
def data() -> dict:
    """The split every step sees (prepare is deterministic)."""
    return prepare()


def test_every_step_script_compiles(built_scripts):
    assert set(built_scripts) == {"prepare", *TRAIN_STEPS, "select_best", "evaluate"}
    for name, script in built_scripts.items():
        compile(script, f"{name}.py", "exec")


def test_step_scripts_need_nothing_of_mlstack(built_scripts):
    """The agent installs only the step packages: a script importing mlstack would fail there."""
    for name, script in built_scripts.items():
        assert "mlstack" not in script, name


def test_steps_install_what_they_import_at_the_versions_here():
    assert step_packages() == [f"{package}=={version(package)}" for package in STEP_PACKAGES]
    source = Path(pipeline_steps()[0].function.__code__.co_filename).read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.strip().startswith("from ")}
    distributions = {"sklearn": "scikit-learn", "clearml": "clearml"}
    assert {distributions[module] for module in imported} <= set(STEP_PACKAGES)


def test_the_controller_puts_steps_in_the_project_and_weights_at_the_destination(monkeypatch):
    """Step tasks (and so their models) in the project itself, not ClearML's hidden `.pipelines`
    subproject; the registering steps carry their helper into their scripts."""

    class RecordingController:
        def __init__(self, **options):
            self.options, self.steps = options, {}

        def set_default_execution_queue(self, queue):
            self.queue = queue

        def add_function_step(self, **step):
            self.steps[step["name"]] = step

    monkeypatch.setattr(pipeline, "PipelineController", RecordingController)
    pipe = build_pipeline("team", "default", "http://files:8081", model_base_name="sales")
    assert pipe.options["target_project"] == "team" and pipe.options["output_uri"] == "http://files:8081"
    for name in (*TRAIN_STEPS, "select_best"):
        assert pipe.steps[name]["helper_functions"] == [register_step_model], name
        assert pipe.steps[name]["function_kwargs"]["model_base_name"] == "sales", name
    assert pipe.steps["prepare"]["helper_functions"] is None


#: Loads each built script as a module (its `__main__` part is the SDK's task plumbing) and chains the
#: step functions as the pipeline does, each step in a task of its own whose parent is a "pipeline"
#: task when argv[5] is "with-parent" (the server refuses a parent it does not know, such as an offline one).
#: Seven tasks in one process: the SDK reports from a thread (its reporting subprocess makes each close
#: wait 10 s) and skips the repository scan (it can stall a later close for minutes).
_RUN_STEPS = """
import json, runpy, sys
from clearml import Task

folder, project, base, output_uri, parent_mode = sys.argv[1:6]
kinds = sys.argv[6].split(",")
Task._report_subprocess_enabled = False
options = dict(
    project_name=project, reuse_last_task_id=False, auto_resource_monitoring=False,
    auto_connect_frameworks={"detect_repository": False},
)
parent, tasks = None, {}
if parent_mode == "with-parent":
    controller = Task.init(task_name="pipeline", task_type="controller", **options)
    parent = controller.id
    controller.close()

def run(step, function, **kwargs):
    module = runpy.run_path(f"{folder}/{step}.py", run_name=step)
    task = Task.init(task_name=step, output_uri=output_uri or None, **options)
    if parent:
        task.set_parent(parent)
    try:
        return module[function](**kwargs)
    finally:
        tasks[step] = task.id
        task.close()

data = run("prepare", "prepare")
results = {kind: run(f"train_{kind}", "train", data=data, model_kind=kind, model_base_name=base) for kind in kinds}
best = run("select_best", "select_best", **results, model_base_name=base)
metrics = run("evaluate", "evaluate", best=best, data=data)
print("run:", json.dumps({"pipeline_id": parent, "tasks": tasks, "metrics": metrics}))
"""


def start_steps(scripts_dir: Path, cache: Path, project: str, output_uri: str, **sdk_env: str):
    """The pipeline's steps in a fresh process as the agent starts one: none of the SDK's variables
    that an earlier task in this process exported (CLEARML_PROC_MASTER_ID would make Task.init defer to
    that task), HOME and the SDK's cache in `cache`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLEARML_", "TRAINS_"))}
    env.update(HOME=str(cache / "home"), CLEARML_CACHE_DIR=str(cache), PYTHONPATH="", **sdk_env)
    parent_mode = "no-parent" if sdk_env.get("CLEARML_OFFLINE_MODE") else "with-parent"
    return subprocess.run(
        [sys.executable, "-c", _RUN_STEPS, str(scripts_dir), project, MODEL_BASE_NAME, output_uri, parent_mode]
        + [",".join(MODEL_KINDS)],
        cwd=scripts_dir,  # not the checkout: nothing of mlstack's source is importable by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_steps(scripts_dir: Path, cache: Path, project: str, output_uri: str, **sdk_env: str) -> dict:
    """The steps run to the end (see `start_steps`); the runner's report: pipeline_id, tasks, metrics."""
    result = start_steps(scripts_dir, cache, project, output_uri, **sdk_env)
    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("run: ")]
    return json.loads(line.removeprefix("run: "))


def online_env(servers) -> dict[str, str]:
    api, files = servers
    return {
        "CLEARML_API_HOST": api.url,
        "CLEARML_WEB_HOST": api.url,
        "CLEARML_FILES_HOST": files.url,
        "CLEARML_API_ACCESS_KEY": SDK_KEY,
        "CLEARML_API_SECRET_KEY": SDK_SECRET,
    }


def val_rmse(model, data: dict) -> float:
    return float(mean_squared_error(data["y_val"], model.predict(data["x_val"])) ** 0.5)


def metadata_values(model: dict) -> dict:
    """A server model's metadata as {key: (type, value)}."""
    return {key: (item["type"], item["value"]) for key, item in model["metadata"].items()}


def weights_on_the_fileserver(servers, url: str):
    """The model the fileserver holds at `url`, unpickled."""
    _, files = servers
    assert url.startswith(files.url + "/"), f"weights registered at {url}, not on the fileserver {files.url}"
    return pickle.loads(files.files[urlparse(url).path.strip("/")])


@pytest.fixture(scope="module")
def online_runs(scripts_dir, servers, tmp_path_factory) -> list[dict]:
    """The steps run twice against the stand-in servers, weights to the fileserver."""
    _, files = servers
    return [
        run_steps(scripts_dir, tmp_path_factory.mktemp("run"), "pipeline-models-test", files.url, **online_env(servers))
        for _ in range(2)
    ]


def test_step_scripts_run_the_pipeline_on_real_data(online_runs):
    metrics = online_runs[-1]["metrics"]
    assert metrics["model_kind"] in MODEL_KINDS
    assert 0 < metrics["test_rmse"] < 100 and -1 < metrics["test_r2"] <= 1


def test_each_train_step_registers_its_model_with_weights_on_the_fileserver(online_runs, servers, data):
    api, _ = servers
    run = online_runs[-1]
    for kind in MODEL_KINDS:
        task = api.tasks[run["tasks"][f"train_{kind}"]]
        (entry,) = task["models"]["output"]
        assert entry["name"] == f"{MODEL_BASE_NAME}-{kind}"
        model = api.models[entry["model"]]
        assert (model["name"], model["task"], model["project"]) == (entry["name"], task["id"], task["project"])
        weights = weights_on_the_fileserver(servers, model["uri"])
        assert model["uri"].endswith(f"/models/{MODEL_BASE_NAME}-{kind}.pkl")
        metadata = metadata_values(model)
        assert metadata["model_kind"] == ("str", kind)
        assert metadata["pipeline_id"] == ("str", run["pipeline_id"])
        assert metadata["train_rows"] == ("int", str(len(data["y_train"])))
        assert metadata["val_r2"][0] == "float"
        assert metadata["val_rmse"][0] == "float"
        assert float(metadata["val_rmse"][1]) == pytest.approx(val_rmse(weights, data))


def test_select_best_registers_the_best_weights_as_base_best(online_runs, servers, data):
    api, _ = servers
    run = online_runs[-1]
    task = api.tasks[run["tasks"]["select_best"]]
    (entry,) = task["models"]["output"]
    assert entry["name"] == f"{MODEL_BASE_NAME}-best"
    best = api.models[entry["model"]]
    metadata = metadata_values(best)
    candidates = {kind: float(metadata[f"val_rmse_{kind}"][1]) for kind in MODEL_KINDS}
    winner = min(candidates, key=candidates.get)
    assert metadata["model_kind"] == ("str", winner) == ("str", run["metrics"]["model_kind"])
    source = api.models[metadata["source_model_id"][1]]
    assert source["task"] == run["tasks"][f"train_{winner}"]
    assert float(metadata["val_rmse"][1]) == pytest.approx(candidates[winner])
    loaded = weights_on_the_fileserver(servers, best["uri"])
    assert (
        loaded.predict(data["x_test"]) == weights_on_the_fileserver(servers, source["uri"]).predict(data["x_test"])
    ).all()


def test_every_run_registers_a_new_version_of_each_name(online_runs, servers):
    api, _ = servers
    project = api.tasks[online_runs[0]["tasks"]["prepare"]]["project"]
    for name in (*(f"{MODEL_BASE_NAME}-{kind}" for kind in MODEL_KINDS), f"{MODEL_BASE_NAME}-best"):
        versions = [model for model in api.models.values() if (model["name"], model["project"]) == (name, project)]
        assert sorted(metadata_values(model)["pipeline_id"][1] for model in versions) == sorted(
            run["pipeline_id"] for run in online_runs
        ), name


#: What a person does on another machine: the newest version of a name, downloaded, unpickled, used.
_PREDICT_ELSEWHERE = """
import pickle, sys
from sklearn.datasets import load_diabetes
from mlstack.tracking.clearml.registry import find_model, load_model
name, project = sys.argv[1:3]
model = pickle.loads(load_model(name, project_name=project).read_bytes())
print(find_model(name, project_name=project).id, len(model.predict(load_diabetes(return_X_y=True)[0])))
"""


def test_the_newest_best_model_loads_and_predicts_on_another_machine(online_runs, servers, tmp_path):
    api, _ = servers
    settings = online_settings(tmp_path / "elsewhere", servers)
    (settings.project_dir / ".env").write_text(
        f"CLEARML_API_PORT={settings.clearml_api_port}\nCLEARML_FILES_PORT={settings.clearml_files_port}\n"
        f"CLEARML_API_ACCESS_KEY={SDK_KEY}\nCLEARML_API_SECRET_KEY={SDK_SECRET}\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLEARML_", "TRAINS_", "MLSTACK_"))}
    env.update(HOME=str(tmp_path / "home"), CLEARML_CACHE_DIR=str(tmp_path / "empty-cache"))
    env.update(MLSTACK_PROJECT_DIR=str(settings.project_dir))
    result = subprocess.run(
        [sys.executable, "-c", _PREDICT_ELSEWHERE, f"{MODEL_BASE_NAME}-best", "pipeline-models-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model_id, predictions = result.stdout.split()[-2:]
    (newest_entry,) = api.tasks[online_runs[-1]["tasks"]["select_best"]]["models"]["output"]
    assert model_id == newest_entry["model"]
    assert int(predictions) == 442  # every row of the diabetes set


def test_a_step_without_an_output_destination_fails_instead_of_registering_a_local_path(scripts_dir, servers, tmp_path):
    api, _ = servers
    result = start_steps(scripts_dir, tmp_path, "pipeline-no-destination-test", "", **online_env(servers))
    assert result.returncode != 0
    assert "has no output destination: the weights of 'diabetes-linear' would be registered as a path" in result.stderr
    (project,) = [id_ for id_, project in api.projects.items() if project["name"] == "pipeline-no-destination-test"]
    assert [model for model in api.models.values() if model["project"] == project] == []


@pytest.fixture(scope="module")
def offline_run(scripts_dir, servers, tmp_path_factory) -> dict:
    """The steps run offline, into the offline folder of a project whose server is the stand-in."""
    settings = online_settings(tmp_path_factory.mktemp("offline-checkout"), servers)
    report = run_steps(
        scripts_dir, settings.clearml_offline_path, "pipeline-offline-test", "", CLEARML_OFFLINE_MODE="1"
    )
    return {"report": report, "settings": settings}


def session_files(settings, session_id: str) -> dict[str, bytes]:
    """The files of a closed offline session, read from the zip the SDK wrote."""
    with zipfile.ZipFile(sessions_dir(settings) / f"{session_id}.zip") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_offline_each_step_session_records_its_model_and_weights(offline_run, data):
    settings, tasks = offline_run["settings"], offline_run["report"]["tasks"]
    for step, name in [
        *((f"train_{kind}", f"{MODEL_BASE_NAME}-{kind}") for kind in MODEL_KINDS),
        ("select_best", f"{MODEL_BASE_NAME}-best"),
    ]:
        files = session_files(settings, tasks[step])
        (model,) = json.loads(files["task.json"])["offline_output_models"]
        assert model["init"]["name"] == name
        assert model["init"]["config_dict"]["val_rmse"] > 0
        weights = pickle.loads(files[f"models/{name}.pkl"])
        assert model["init"]["config_dict"]["val_rmse"] == pytest.approx(val_rmse(weights, data))
    for session in ("prepare", "evaluate"):
        assert not json.loads(session_files(settings, tasks[session])["task.json"]).get("offline_output_models")


def test_offline_models_reach_the_server_with_typed_metadata_on_sync(offline_run, servers, data):
    api, _ = servers
    settings, tasks = offline_run["settings"], offline_run["report"]["tasks"]
    report = sync_offline_sessions(settings)
    assert report.failed == {}
    task = api.tasks[report.synced[tasks["select_best"]]]
    (entry,) = task["models"]["output"]
    best = api.models[entry["model"]]
    assert best["name"] == f"{MODEL_BASE_NAME}-best"
    types = {key: kind for key, (kind, _) in metadata_values(best).items()}
    assert types == {
        "model_kind": "str",
        "source_model_id": "str",
        **{key: "float" for key in ("val_rmse", "val_r2", *(f"val_rmse_{kind}" for kind in MODEL_KINDS))},
    }
    assert weights_on_the_fileserver(servers, best["uri"]).predict(data["x_test"]).shape == data["y_test"].shape

"""`mlstack demo` with no stack, as a user runs it in a fresh checkout: first with no
MLFLOW_TRACKING_URI, then with one in .env whose server is down (after `make down`). Both runs land
in the local store in the state folder and ClearML offline, and the second adds version 2 of the
model rather than failing."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from mlstack.demo import ALIAS, EXPERIMENT, MODEL_NAME
from mlstack.envfile import update_env
from tests.conftest import free_port, make_project, run_mlstack

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("val_rmse_per_run.png", "champion_predicted_vs_actual.png", "champion_residuals.png")
CANDIDATES = 10


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-no-stack")
    settings = make_project(root / "project")
    outputs = []
    for _ in range(2):
        demo = run_mlstack(settings.project_dir, "demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        outputs.append(demo.stdout + demo.stderr)
        # then the user ran `make up`, `make bootstrap-credentials` and `make down`
        update_env(settings.env_file, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    return settings, outputs


def local_store(settings) -> MlflowClient:
    return MlflowClient(f"sqlite:///{settings.state_path / 'mlflow.db'}")


def test_both_runs_use_the_local_store_in_the_state_folder_and_say_why_once(demo_runs):
    settings, (unset, not_answering) = demo_runs
    store = str(settings.state_path / "mlflow.db")
    for output in (unset, not_answering):
        assert output.count("tracking to the local store") == 1, output
        assert store in output.replace("\n", ""), output
        assert output.count("ClearML offline") == 1, output
    assert "MLFLOW_TRACKING_URI is not set: tracking to the local store" in unset
    assert "(MLFLOW_TRACKING_URI) does not answer: tracking to the local store" in not_answering
    assert "Traceback" not in unset + not_answering


def test_runs_land_in_the_local_store_as_parents_with_a_child_per_candidate(demo_runs):
    settings, _ = demo_runs
    client = local_store(settings)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    every_run = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in every_run if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 2 and {run.info.status for run in parents} == {"FINISHED"}
    for parent in parents:
        children = [run for run in every_run if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == CANDIDATES and {run.info.status for run in children} == {"FINISHED"}
        best = min(children, key=lambda run: run.data.metrics["val_rmse"])
        assert parent.data.tags["champion"] == best.info.run_name
        assert {"test_rmse", "test_r2"} <= parent.data.metrics.keys()
        (dataset,) = parent.inputs.dataset_inputs
        assert dataset.dataset.name == "diabetes"


def test_the_second_run_adds_version_2_and_moves_the_champion_alias(demo_runs):
    settings, outputs = demo_runs
    assert [f"models:/{MODEL_NAME}@{ALIAS} is version {n}" in output for n, output in enumerate(outputs, 1)] == [
        True,
        True,
    ]
    client = local_store(settings)
    champion = client.get_model_version_by_alias(MODEL_NAME, ALIAS)
    newest_parent = max(
        client.search_runs(
            [client.get_experiment_by_name(EXPERIMENT).experiment_id], "attributes.run_name LIKE 'demo %'"
        ),
        key=lambda run: run.info.start_time,
    )
    assert (str(champion.version), champion.run_id) == ("2", newest_parent.info.run_id)


def test_plots_are_png_files_under_reports_and_clearml_sessions_are_kept_for_sync(demo_runs):
    settings, _ = demo_runs
    for plot in PLOTS:
        path = settings.project_dir / "reports" / "demo" / plot
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 20_000
    sessions = sorted((settings.clearml_offline_path / "offline").glob("*.zip"))
    assert len(sessions) == 2, "one offline ClearML session per demo run, for `mlstack clearml sync`"

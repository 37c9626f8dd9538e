"""`mlstack demo` end to end against the live stack (ClearML offline), run twice as a user would after
`make up`: runs in PostgreSQL, the champion alias on the newest version, plots and the model as
objects in the artifact store, and the plots real PNG images."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mlstack.demo import ALIAS, EXPERIMENT, MODEL_NAME, SELECTION_METRIC
from tests.conftest import run_mlstack

pytestmark = pytest.mark.integration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = (f"{SELECTION_METRIC}_per_run.png", "champion_predicted_vs_actual.png", "champion_residuals.png")
CANDIDATES = 10


@pytest.fixture(scope="module")
def demo_runs(mlflow_stack):
    """`mlstack demo`, twice, in the stack's project as a user runs it after `make up` (which wrote
    MLFLOW_TRACKING_URI and the client account's credentials to .env): nothing else in the environment."""
    outputs = []
    for _ in range(2):
        demo = run_mlstack(mlflow_stack.settings.project_dir, "demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        outputs.append(demo.stdout + demo.stderr)
    return outputs


def test_both_runs_track_to_the_stack_with_the_credentials_of_env(mlflow_stack, demo_runs):
    for output in demo_runs:
        assert "local store" not in output and "Traceback" not in output, output
        assert f"MLflow UI: {mlflow_stack.tracking_uri}/#/experiments/" in output.replace("\n", "")
        assert "View run" not in output, "MLflow's link to each child run is noise under the progress bar"


def parent_runs(mlflow_stack) -> list[tuple[str, str, list[str]]]:
    """(run id, status, statuses of its children) of each demo parent run, oldest first."""
    with mlflow_stack.pg_connect() as connection:
        rows = connection.execute(
            "SELECT r.run_uuid, r.status, parent.value FROM runs r "
            "JOIN experiments e ON e.experiment_id = r.experiment_id "
            "LEFT JOIN tags parent ON parent.run_uuid = r.run_uuid AND parent.key = 'mlflow.parentRunId' "
            "WHERE e.name = %s ORDER BY r.start_time",
            (EXPERIMENT,),
        ).fetchall()
    return [
        (run_id, status, [child_status for _, child_status, parent in rows if parent == run_id])
        for run_id, status, parent in rows
        if parent is None
    ]


def object_keys(mlflow_stack) -> list[str]:
    pages = mlflow_stack.s3.get_paginator("list_objects_v2").paginate(Bucket=mlflow_stack.bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_each_run_is_a_parent_with_one_finished_child_per_candidate(mlflow_stack, demo_runs):
    parents = parent_runs(mlflow_stack)
    assert [(status, children) for _, status, children in parents] == [("FINISHED", ["FINISHED"] * CANDIDATES)] * 2


def test_the_second_run_adds_a_version_and_the_champion_alias_points_at_it(mlflow_stack, demo_runs):
    assert f"models:/{MODEL_NAME}@{ALIAS} is version 1" in demo_runs[0]
    assert f"models:/{MODEL_NAME}@{ALIAS} is version 2" in demo_runs[1]
    with mlflow_stack.pg_connect() as connection:
        version, run_id = connection.execute(
            "SELECT a.version, v.run_id FROM registered_model_aliases a "
            "JOIN model_versions v ON v.name = a.name AND v.version = a.version WHERE a.name = %s AND a.alias = %s",
            (MODEL_NAME, ALIAS),
        ).fetchone()
    assert (version, run_id) == (2, parent_runs(mlflow_stack)[-1][0])


def test_plots_and_the_model_are_objects_in_the_bucket(mlflow_stack, demo_runs):
    keys = object_keys(mlflow_stack)
    for run_id, _, _ in parent_runs(mlflow_stack):
        stored = {key.split(f"{run_id}/artifacts/", 1)[1] for key in keys if f"{run_id}/artifacts/" in key}
        assert {f"plots/{plot}" for plot in PLOTS} | {"reports/runs.csv"} <= stored
    with mlflow_stack.pg_connect() as connection:
        (source,) = connection.execute(
            "SELECT storage_location FROM model_versions WHERE name = %s AND version = 2", (MODEL_NAME,)
        ).fetchone()
    model_prefix = source.removeprefix("mlflow-artifacts:/").strip("/")
    model_files = {key.removeprefix(f"{model_prefix}/") for key in keys if key.startswith(f"{model_prefix}/")}
    assert "MLmodel" in model_files and {"model.pkl", "model.skops"} & model_files, model_files


def test_plots_are_real_png_images_in_the_bucket_and_under_reports(mlflow_stack, demo_runs):
    newest = parent_runs(mlflow_stack)[-1][0]
    keys = object_keys(mlflow_stack)
    for plot in PLOTS:
        (key,) = [key for key in keys if key.endswith(f"{newest}/artifacts/plots/{plot}")]
        stored = mlflow_stack.s3.get_object(Bucket=mlflow_stack.bucket, Key=key)["Body"].read()
        assert stored.startswith(PNG_SIGNATURE) and len(stored) > 20_000, (plot, len(stored))
        with Image.open(io.BytesIO(stored)) as image:
            assert image.format == "PNG" and min(image.size) >= 400, (plot, image.size)
        saved = mlflow_stack.settings.project_dir / "reports" / "demo" / plot
        assert saved.read_bytes() == stored, f"{saved} is the plot logged with the newest run"

"""ClearMLTracker with the real ClearML SDK and no server: everything lands in the offline session."""

from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from clearml_helpers import free_port, make_settings
from omegaconf import OmegaConf

from mlstack.tracking.clearml import connection
from mlstack.tracking.clearml.errors import ClearMLConfigError, ClearMLUnavailableError
from mlstack.tracking.clearml.offline import pending_sessions, scan_sessions, sessions_dir, sync_offline_sessions
from mlstack.tracking.clearml.tracker import FAILED_TAG, ClearMLTracker
from tests.conftest import run_python

CFG = {"clearml": {"project": "housing", "tags": ["baseline"]}, "model": {"name": "ridge", "alpha": 0.5}}


def read_events(path: Path) -> list[dict]:
    """Events of an offline session file: one JSON list of events per line."""
    return [event for line in path.read_text().splitlines() if line.strip() for event in json.loads(line)]


@pytest.fixture(scope="module")
def session(isolated_sdk):
    """One offline task that exercises every tracker method; yields its session folder."""
    settings = make_settings(isolated_sdk / "checkout")
    weights = isolated_sdk / "ridge.joblib"
    weights.write_bytes(b"ridge weights")
    report = isolated_sdk / "report.json"
    report.write_text('{"rows": 506}')
    with ClearMLTracker(OmegaConf.create(CFG), stage="train", extra_tags=["nightly"], settings=settings) as tracker:
        tracker.connect_dict("train_params", {"alpha": 0.5, "model": "ridge"})
        tracker.log_metrics({"val_rmse": 4.2, "val_r2": 0.71}, series="validation", iteration=0)
        tracker.log_metrics({"val_rmse": 3.9}, series="validation", iteration=1)
        tracker.log_text("training finished")
        tracker.upload_artifact("report", report)
        tracker.upload_artifact("summary", {"best": "ridge"})
        model_id = tracker.register_model(weights, "housing-ridge", metadata={"val_rmse": 3.9})
    folder = settings.clearml_offline_path / "offline" / tracker.task_id
    return {"folder": folder, "tracker": tracker, "model_id": model_id, "settings": settings}


def task_json(session) -> dict:
    return json.loads((session["folder"] / "task.json").read_text())


def test_sessions_go_to_the_state_folder_and_close_into_a_zip(session):
    folder = session["folder"]
    assert session["tracker"].offline
    assert folder.parent == session["settings"].state_path / "clearml" / "offline"
    assert folder.with_suffix(".zip").is_file()


def test_task_carries_project_stage_type_and_tags(session):
    data = task_json(session)
    assert data["project_name"] == "housing"
    assert data["name"] == "train"
    assert data["type"] == "training"
    assert set(data["tags"]) == {"train", "baseline", "nightly"}


def test_parameters_and_the_whole_config_are_recorded(session):
    data = task_json(session)
    params = data["hyperparams"]["train_params"]
    assert (params["alpha"]["value"], params["model"]["value"]) == ("0.5", "ridge")
    config_text = data["configuration"]["config"]["value"]
    assert "ridge" in config_text and "housing" in config_text


def test_scalars_are_reported_per_metric_series_and_iteration(session):
    scalars = {
        (event["metric"], event["variant"], event["iter"]): event["value"]
        for event in read_events(session["folder"] / "metrics.jsonl")
        if event["type"] == "training_stats_scalar"
    }
    assert scalars == {
        ("val_rmse", "validation", 0): 4.2,
        ("val_r2", "validation", 0): 0.71,
        ("val_rmse", "validation", 1): 3.9,
    }


def test_text_goes_to_the_task_log(session):
    messages = [event.get("msg", "") for event in read_events(session["folder"] / "log.jsonl")]
    assert any("training finished" in message for message in messages)


def test_file_and_object_artifacts_are_stored(session):
    artifacts = {path.parent.name: path for path in (session["folder"] / "data").rglob("*") if path.is_file()}
    assert artifacts["report"].read_text() == '{"rows": 506}'
    assert json.loads(artifacts["summary"].read_text()) == {"best": "ridge"}


def test_registered_model_keeps_weights_name_and_metadata(session):
    (model,) = task_json(session)["offline_output_models"]
    assert model["id"] == session["model_id"]
    assert model["init"]["name"] == "housing-ridge"
    assert model["init"]["config_dict"] == {"val_rmse": 3.9}
    weights = Path(model["weights"]["weights_filename"])
    assert weights.parent == session["folder"] / "models", "the session carries its own copy of the weights"
    assert weights.read_bytes() == b"ridge weights"


def test_registered_model_records_where_sync_uploads_its_weights(session):
    (model,) = task_json(session)["offline_output_models"]
    assert model["output_uri"] == session["settings"].clearml_files_url


def test_a_task_closed_after_the_process_caught_an_exit_keeps_every_scalar(tmp_path):
    """The SDK's exit hook remembers any `sys.exit(1)` the process caught (a CLI run in-process, a sweep
    driver) and then closes later tasks without flushing: their scalars missed the zip. In a fresh
    process, as the user's: a first task, a caught exit, a second task whose points must all be zipped."""
    code = f"""
        import sys
        from mlstack.settings import Settings
        from mlstack.tracking.clearml.tracker import ClearMLTracker
        settings = Settings(
            MLSTACK_PROJECT_DIR={str(tmp_path)!r}, _env_file=None,
            clearml_api_access_key=None, clearml_api_secret_key=None,
        )
        with ClearMLTracker({{}}, stage="first", settings=settings):
            pass
        try:
            sys.exit(1)
        except SystemExit:
            pass
        with ClearMLTracker({{}}, stage="second", settings=settings) as tracker:
            for step in range(50):
                tracker.log_metrics({{"loss": 1 / (step + 1)}}, series="train", iteration=step)
        print(settings.clearml_offline_path / "offline" / f"{{tracker.task_id}}.zip")
    """
    result = run_python(code, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(result.stdout.splitlines()[-1]) as archive:
        assert "metrics.jsonl" in archive.namelist(), archive.namelist()
        lines = archive.read("metrics.jsonl").decode().splitlines()
    assert sorted(event["iter"] for line in lines if line for event in json.loads(line)) == list(range(50))


def test_an_open_session_is_locked_until_its_zip_is_written(isolated_sdk):
    settings = make_settings(isolated_sdk / "locked")
    with ClearMLTracker(CFG, stage="train", settings=settings) as tracker:
        assert scan_sessions(settings) == ([], [tracker.task_id]), "sync must leave an open session alone"
    (closed,), still_open = scan_sessions(settings)
    assert (closed.id, closed.closed, still_open) == (tracker.task_id, True, [])
    assert not list(sessions_dir(settings).glob("*.lock"))


def test_failing_block_marks_the_task_failed_and_reraises(isolated_sdk, caplog, monkeypatch):
    settings = make_settings(isolated_sdk / "failing")
    monkeypatch.setattr(connection, "_announced_offline", False)
    caplog.set_level(logging.WARNING)
    tracker = ClearMLTracker(CFG, stage="train", settings=settings)
    with pytest.raises(RuntimeError, match="diverged"), tracker:
        tracker.log_metrics({"loss": 1.0}, series="train", iteration=0)
        raise RuntimeError("loss diverged")
    folder = settings.clearml_offline_path / "offline" / tracker.task_id
    assert FAILED_TAG in json.loads((folder / "task.json").read_text())["tags"]
    log_text = "".join(event.get("msg", "") for event in read_events(folder / "log.jsonl"))
    assert "RuntimeError: loss diverged" in log_text
    offline_messages = [r.getMessage() for r in caplog.records if "ClearML offline" in r.getMessage()]
    assert len(offline_messages) == 1
    assert "mlstack clearml sync" in offline_messages[0]


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        ("housing", "cfg must be a dict or an OmegaConf DictConfig, got str"),
        ({"clearml": "housing"}, "cfg's clearml section must be a mapping, got str"),
        ({"clearml": {"project": ""}}, "clearml.project must be a non-empty string, got ''"),
        ({"clearml": {"project": 42}}, "clearml.project must be a non-empty string, got 42"),
        ({"clearml": {"project": "p", "tags": "a,b"}}, "clearml.tags must be a list of strings, got 'a,b'"),
    ],
)
def test_bad_config_is_refused_with_the_fix(cfg, expected, isolated_sdk):
    with pytest.raises(ClearMLConfigError, match=re.escape(expected)):
        ClearMLTracker(cfg, stage="train", settings=make_settings(isolated_sdk / "bad"))


@pytest.mark.parametrize("cfg", [{"model": "ridge"}, {"clearml": None}, {"clearml": {"tags": ["baseline"]}}])
def test_config_without_a_project_uses_the_default_project(cfg, isolated_sdk):
    tracker = ClearMLTracker(cfg, stage="train", settings=make_settings(isolated_sdk / "default"))
    assert tracker.project_name == "mlstack"


def test_default_project_comes_from_the_environment(isolated_sdk, monkeypatch):
    monkeypatch.setenv("CLEARML_DEFAULT_PROJECT", "housing-team")
    tracker = ClearMLTracker({"model": "ridge"}, stage="train", settings=make_settings(isolated_sdk / "default"))
    assert tracker.project_name == "housing-team"


def test_unknown_task_type_lists_the_valid_ones(isolated_sdk):
    with pytest.raises(ClearMLConfigError, match="task_type 'train' is not a ClearML task type: use one of"):
        ClearMLTracker(CFG, stage="train", task_type="train", settings=make_settings(isolated_sdk / "bad"))


def test_non_numeric_metric_is_named(isolated_sdk):
    tracker = ClearMLTracker(CFG, stage="train", settings=make_settings(isolated_sdk / "bad"))
    with pytest.raises(ClearMLConfigError, match="metric 'val_rmse' has value 'n/a', which is not a finite number"):
        tracker.log_metrics({"val_rmse": "n/a"}, series="validation", iteration=0)
    with pytest.raises(ClearMLConfigError, match="metric 'loss' has value nan"):
        tracker.log_metrics({"loss": float("nan")}, series="train", iteration=0)
    with pytest.raises(ClearMLConfigError, match="iteration must be a non-negative integer, got -1"):
        tracker.log_metrics({"loss": 1.0}, series="train", iteration=-1)


def test_missing_files_are_named(isolated_sdk, tmp_path):
    tracker = ClearMLTracker(CFG, stage="train", settings=make_settings(isolated_sdk / "bad"))
    missing = tmp_path / "model.joblib"
    with pytest.raises(ClearMLConfigError, match=f"model file {missing} does not exist: save the model"):
        tracker.register_model(missing, "housing-ridge")
    with pytest.raises(ClearMLConfigError, match=f"file {missing} does not exist: write it before uploading"):
        tracker.upload_artifact("model", missing)


def test_methods_outside_the_with_block_say_how_to_use_it(isolated_sdk):
    tracker = ClearMLTracker(CFG, stage="train", settings=make_settings(isolated_sdk / "bad"))
    with pytest.raises(ClearMLConfigError, match="use it as `with ClearMLTracker"):
        tracker.log_text("hello")


# --- sync of offline sessions (bookkeeping with a recording importer; uploads: test_offline_sync.py) ---


def test_sync_uploads_each_closed_session_once_and_marks_it(session):
    settings = session["settings"]
    imported = []

    def importer(offline_session, _settings):
        imported.append(offline_session.source)
        return f"server-{len(imported)}"

    first = sync_offline_sessions(settings, importer=importer)
    session_id = session["tracker"].task_id
    assert first.synced == {session_id: "server-1"}
    assert imported == [session["folder"].with_suffix(".zip")]
    marker = json.loads(session["folder"].with_name(f"{session_id}.synced.json").read_text())
    assert marker["task_id"] == "server-1"

    second = sync_offline_sessions(settings, importer=importer)
    assert second.synced == {} and second.already_synced == [session_id]
    assert len(imported) == 1
    assert session["folder"].with_suffix(".zip").is_file(), "a synced session is kept, never deleted"


def test_a_failing_upload_keeps_the_session_pending(isolated_sdk, session):
    settings = make_settings(isolated_sdk / "failing-sync")
    offline = settings.clearml_offline_path / "offline"
    offline.mkdir(parents=True)
    shutil.copy(session["folder"].with_suffix(".zip"), offline / "offline-abc.zip")

    def broken(offline_session, _settings):
        raise ConnectionError("server went away")

    report = sync_offline_sessions(settings, importer=broken)
    assert report.failed == {"offline-abc": "ConnectionError: server went away"}
    assert [s.source.name for s in pending_sessions(settings)] == ["offline-abc.zip"]


def test_sync_without_a_server_says_what_to_do(isolated_sdk):
    settings = make_settings(
        isolated_sdk / "no-server",
        clearml_api_access_key="key",
        clearml_api_secret_key="secret",
        clearml_api_port=free_port(),
    )
    with pytest.raises(ClearMLUnavailableError, match=r"does not answer.*start it \(`make up`\)"):
        sync_offline_sessions(settings)

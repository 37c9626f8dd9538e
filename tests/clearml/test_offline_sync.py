"""Offline sessions reach the server: the tracker writes them with the real SDK, `sync` imports them
into a stand-in apiserver and fileserver, once each, and names every session that failed and why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fake_apiserver import SDK_KEY, SDK_SECRET, shared_servers

from mlstack.settings import Settings
from mlstack.tracking.clearml.offline import (
    KILLED_REASON,
    SessionLock,
    scan_sessions,
    sessions_dir,
    sync_offline_sessions,
)
from mlstack.tracking.clearml.tracker import ClearMLTracker


@pytest.fixture(scope="module")
def servers(isolated_sdk):
    return shared_servers()


@pytest.fixture()
def checkout(tmp_path, servers) -> Path:
    """A project whose .env points at the stand-in servers (as `mlstack bootstrap` would write it)."""
    api, files = servers
    (tmp_path / ".env").write_text(
        f"MLSTACK_STATE_DIR={tmp_path / 'state'}\nCLEARML_API_PORT={urlparse(api.url).port}\n"
        f"CLEARML_FILES_PORT={urlparse(files.url).port}\n"
        f"CLEARML_API_ACCESS_KEY={SDK_KEY}\nCLEARML_API_SECRET_KEY={SDK_SECRET}\n"
    )
    return tmp_path


def record_session(
    checkout: Path, stage: str, metadata: dict | None = None, model: bool = True, artifact: bool = True
) -> str:
    """One offline task of the tracker (metrics, optionally an artifact and a model); its session id."""
    settings = Settings.load(checkout)
    weights = checkout / f"{stage}.joblib"
    weights.write_bytes(f"weights of {stage}".encode())
    with ClearMLTracker({"clearml": {"project": "sync-test", "offline": True}}, stage, settings=settings) as tracker:
        tracker.log_metrics({"val_rmse": 4.2}, series="validation", iteration=0)
        if artifact:
            tracker.upload_artifact("summary", {"stage": stage})
        if model:
            tracker.register_model(weights, f"{stage}-model", metadata=metadata)
    return tracker.task_id


def server_tasks(api, name: str) -> list[dict]:
    return [task for task in api.tasks.values() if task["name"] == name]


def server_models(api, name: str) -> list[dict]:
    return [model for model in api.models.values() if model["name"] == name]


def fileserver_bytes(files, url: str) -> bytes:
    assert url.startswith(files.url + "/"), f"{url} is not on the fileserver {files.url}"
    return files.files[urlparse(url).path.strip("/")]


def script_env(checkout: Path) -> dict[str, str]:
    """A fresh process's environment for the project at `checkout`: no SDK state inherited from this one."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLEARML_", "TRAINS_", "MLSTACK_"))}
    env.update(HOME=str(checkout / "home"), CLEARML_CACHE_DIR=str(checkout / "sdk-cache"), COLUMNS="250")
    env.update(MLSTACK_PROJECT_DIR=str(checkout))
    return env


def run_python(checkout: Path, *argv: str) -> subprocess.CompletedProcess:
    """`python *argv` in a fresh interpreter for the project at `checkout`."""
    command = [sys.executable, *argv]
    return subprocess.run(command, env=script_env(checkout), capture_output=True, text=True, timeout=300)


def run_script(checkout: Path, script: str) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter; it finds the project in sys.argv[1]."""
    return run_python(checkout, "-c", textwrap.dedent(script), str(checkout))


def test_a_session_with_a_model_and_metadata_is_imported_with_its_weights_uploaded(checkout, servers):
    api, files = servers
    session_id = record_session(checkout, "with-metadata", metadata={"val_rmse": 3.9, "n_features": 13})

    report = sync_offline_sessions(Settings.load(checkout))

    assert report.failed == {}
    task = api.tasks[report.synced[session_id]]
    assert task["status"] == "completed"
    (model,) = server_models(api, "with-metadata-model")
    assert model["task"] == task["id"]
    assert fileserver_bytes(files, model["uri"]) == b"weights of with-metadata"
    assert model["metadata"]["val_rmse"] == {"key": "val_rmse", "type": "float", "value": "3.9"}
    assert model["metadata"]["n_features"] == {"key": "n_features", "type": "int", "value": "13"}
    assert "val_rmse" in model["design"]["design"]
    (artifact,) = task["execution"]["artifacts"]
    assert json.loads(fileserver_bytes(files, artifact["uri"])) == {"stage": "with-metadata"}
    scalars = [e for e in api.events if e["task"] == task["id"] and e["type"] == "training_stats_scalar"]
    assert [(e["metric"], e["variant"], e["value"]) for e in scalars] == [("val_rmse", "validation", 4.2)]


def test_a_session_recorded_without_a_destination_is_uploaded_to_the_fileserver(checkout, servers):
    """Sessions written before the tracker recorded destinations (or by the SDK alone) name none."""
    api, files = servers
    session_id = record_session(checkout, "no-destination", artifact=False)
    zip_file = sessions_dir(Settings.load(checkout)) / f"{session_id}.zip"
    with zipfile.ZipFile(zip_file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    task_data = json.loads(entries["task.json"])
    for model in task_data["offline_output_models"]:
        model["output_uri"] = None
    entries["task.json"] = json.dumps(task_data).encode()
    with zipfile.ZipFile(zip_file, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)

    assert sync_offline_sessions(Settings.load(checkout)).failed == {}
    (model,) = server_models(api, "no-destination-model")
    assert fileserver_bytes(files, model["uri"]) == b"weights of no-destination"


@pytest.mark.parametrize("stage", ["artifact-upload-fails", "model-upload-fails"])
def test_a_partly_imported_session_is_imported_again_without_a_duplicate(checkout, servers, stage):
    api, files = servers
    session_id = record_session(checkout, stage, artifact=stage.startswith("artifact"))
    files.refuse_uploads = 100  # the fileserver fails once the task (and maybe its model) exists on the server
    try:
        first = sync_offline_sessions(Settings.load(checkout))
    finally:
        files.refuse_uploads = 0
    assert "(500): disk full" in first.failed[session_id]
    assert [task["status"] for task in server_tasks(api, stage)] == ["in_progress"]

    second = sync_offline_sessions(Settings.load(checkout))

    assert second.failed == {}
    (task,) = server_tasks(api, stage)
    assert (task["id"], task["status"]) == (second.synced[session_id], "completed")
    (model,) = server_models(api, f"{stage}-model")
    assert fileserver_bytes(files, model["uri"]) == f"weights of {stage}".encode()


def test_an_import_the_server_did_not_complete_is_reported_and_done_again(checkout, servers):
    api, _ = servers
    session_id = record_session(checkout, "not-completed", model=False)
    api.fail_once["tasks.completed"] = "the server restarted"

    first = sync_offline_sessions(Settings.load(checkout))

    assert "left the imported task" in first.failed[session_id] and "'in_progress'" in first.failed[session_id]
    second = sync_offline_sessions(Settings.load(checkout))
    (task,) = server_tasks(api, "not-completed")
    assert (task["id"], task["status"]) == (second.synced[session_id], "completed")


def test_a_finished_import_whose_marker_was_lost_is_not_imported_twice(checkout, servers):
    api, _ = servers
    session_id = record_session(checkout, "marker-lost", model=False)
    settings = Settings.load(checkout)
    task_id = sync_offline_sessions(settings).synced[session_id]
    (sessions_dir(settings) / f"{session_id}.synced.json").unlink()  # e.g. killed right after the import

    again = sync_offline_sessions(settings)

    assert again.synced == {session_id: task_id}
    assert len(server_tasks(api, "marker-lost")) == 1


def test_the_session_of_a_killed_process_is_found_and_synced_as_failed(checkout, servers):
    api, files = servers
    script = """
        import sys, time
        from pathlib import Path
        from mlstack.settings import Settings
        from mlstack.tracking.clearml.tracker import ClearMLTracker

        checkout = Path(sys.argv[1])
        weights = checkout / "killed.joblib"
        weights.write_bytes(b"weights of a killed run")
        cfg = {"clearml": {"project": "sync-test", "offline": True}}
        with ClearMLTracker(cfg, "killed-run", settings=Settings.load(checkout)) as tracker:
            tracker.register_model(weights, "killed-run-model", metadata={"val_rmse": 5.0})
            print("SESSION", tracker.task_id, flush=True)
            time.sleep(600)
        """
    job = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(checkout)],
        env=script_env(checkout),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the process and the SDK's reporting subprocess, killed together
    )
    try:
        session_id = next(line.split()[1] for line in job.stdout if line.startswith("SESSION"))
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate(timeout=60)
    settings = Settings.load(checkout)
    assert not (sessions_dir(settings) / f"{session_id}.zip").exists(), "the process died before closing"

    report = sync_offline_sessions(settings)

    assert report.failed == {}
    task = api.tasks[report.synced[session_id]]
    assert (task["status"], task["status_reason"]) == ("failed", KILLED_REASON)
    (model,) = server_models(api, "killed-run-model")
    assert fileserver_bytes(files, model["uri"]) == b"weights of a killed run"


def test_a_session_still_being_written_is_left_alone(checkout, servers):
    api, _ = servers
    session_id = record_session(checkout, "still-open", model=False)
    settings = Settings.load(checkout)
    (sessions_dir(settings) / f"{session_id}.zip").unlink()  # as while its process still runs
    lock = SessionLock(sessions_dir(settings))
    lock.name_session(session_id)

    report = sync_offline_sessions(settings)
    assert (report.synced, report.failed, report.still_open) == ({}, {}, [session_id])
    assert server_tasks(api, "still-open") == []

    lock.release()
    starting = SessionLock(sessions_dir(settings))  # a tracker inside Task.init: its session has no lock yet
    assert scan_sessions(settings) == ([], [session_id])
    starting.release()
    (pending,) = scan_sessions(settings)[0]
    assert (pending.id, pending.closed) == (session_id, False)


def test_a_process_that_recorded_offline_syncs_once_the_server_answers(checkout):
    result = run_script(
        checkout,
        """
        import sys
        from pathlib import Path
        from mlstack.settings import Settings
        from mlstack.tracking.clearml.offline import sync_offline_sessions
        from mlstack.tracking.clearml.tracker import ClearMLTracker

        settings = Settings.load(Path(sys.argv[1]))
        with ClearMLTracker({"clearml": {"project": "sync-test", "offline": True}}, "same-process", settings=settings):
            pass
        report = sync_offline_sessions(settings)
        print("synced", len(report.synced), "failed", report.failed)
        """,
    )
    assert "synced 1 failed {}" in result.stdout, result.stderr[-3000:]


def test_cli_names_each_failed_session_with_its_error_and_exits_1(checkout, servers):
    record_session(checkout, "cli-good", model=False)
    (sessions_dir(Settings.load(checkout)) / "offline-broken.zip").write_bytes(b"not a zip")

    result = run_python(checkout, "-m", "mlstack.cli", "clearml", "sync")

    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    broken = "clearml sync: session offline-broken failed, it stays pending: BadZipFile: File is not a zip file"
    assert [line for line in lines if line.startswith("clearml sync: session")] == [broken]
    assert "clearml sync: 1 uploaded, 0 already synced, 1 failed" in lines

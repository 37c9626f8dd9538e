"""ClearML tracking in a child process, and the SDK's own offline switch, with the real SDK and no
server: a tracker records its task in any process (never the SDK's stand-in that records nothing),
leaves no master id for its children, and CLEARML_OFFLINE_MODE=1 holds even when a server answers."""

from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path

from tests.conftest import free_port, run_python

TRACK_ONE_TASK = textwrap.dedent("""
    import os, subprocess, sys
    from mlstack.settings import Settings
    from mlstack.tracking.clearml.tracker import ClearMLTracker
    settings = Settings(
        MLSTACK_PROJECT_DIR={root!r}, MLSTACK_STATE_DIR={root!r} + "/state", _env_file=None,
        clearml_api_access_key={key!r}, clearml_api_secret_key={secret!r}, clearml_api_port={port},
    )
    with ClearMLTracker({{}}, stage={stage!r}, settings=settings) as tracker:
        tracker.log_metrics({{"loss": 0.5}}, series="train", iteration=0)
    print("OFFLINE" if tracker.offline else "ONLINE", type(tracker.task).__name__)
    print(settings.clearml_offline_path / "offline" / f"{{tracker.task_id}}.zip")
    print("MASTER", os.environ.get("CLEARML_PROC_MASTER_ID"))
""")


def track(root: Path, home: Path, stage: str, extra_env: str = "", key=None, secret=None, port=None):
    port = port or free_port()  # never a default port: a user's ClearML may listen there
    code = extra_env + TRACK_ONE_TASK.format(root=str(root), key=key, secret=secret, port=port, stage=stage)
    return run_python(code, home)


def test_a_tracker_in_a_process_that_inherited_a_master_id_records_its_own_task(tmp_path):
    inherited = 'import os\nos.environ["CLEARML_PROC_MASTER_ID"] = "1:"\n'  # as a child of a closed task gets it
    result = track(tmp_path / "checkout", tmp_path / "home", "child", inherited)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded, archive, master = result.stdout.splitlines()[-3:]
    assert recorded == "OFFLINE Task", result.stdout
    with zipfile.ZipFile(archive) as session:
        assert "metrics.jsonl" in session.namelist()
    assert master == "MASTER None", "no master id is left for this process's children"


def test_a_child_started_after_a_task_closed_records_its_task(tmp_path):
    child = TRACK_ONE_TASK.format(root=str(tmp_path / "child"), key=None, secret=None, port=free_port(), stage="child")
    parent = TRACK_ONE_TASK.format(
        root=str(tmp_path / "parent"), key=None, secret=None, port=free_port(), stage="parent"
    )
    parent += (
        f"done = subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True)\n"
        "print('CHILD', done.returncode, done.stdout.splitlines()[-3] if done.stdout else done.stderr[-2000:])\n"
    )
    result = run_python(parent, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "CHILD 0 OFFLINE Task", result.stdout


def test_clearml_offline_mode_holds_when_a_server_answers(tmp_path):
    from tests.clearml.fake_apiserver import SDK_KEY, SDK_SECRET, shared_servers

    api, _ = shared_servers()
    port = int(api.url.rsplit(":", 1)[1])
    calls_before = len(api.calls)
    switch = 'import os\nos.environ["CLEARML_OFFLINE_MODE"] = "1"\n'
    result = track(tmp_path / "checkout", tmp_path / "home", "offline", switch, SDK_KEY, SDK_SECRET, port)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-3].split() == ["OFFLINE", "Task"], result.stdout
    assert api.calls[calls_before:] == [], "nothing went to the server"

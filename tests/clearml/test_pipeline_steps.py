"""Each pipeline step as ClearML runs it: the script the SDK builds from the step function
(`CreateFromFunction.create_task_from_function(..., dry_run=True)`, as PipelineController does) must
compile and, run in a fresh interpreter without mlstack, do the step's work on real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from clearml import Task
from clearml.backend_interface.task.populate import CreateFromFunction

from mlstack.tracking.clearml.pipeline import MODEL_KINDS, STEP_PACKAGES, pipeline_steps, step_packages


@pytest.fixture(scope="module")
def built_scripts(isolated_sdk) -> dict[str, str]:
    """Every step's script, built by the SDK offline (no server is needed to build one; the trackers
    and sync choose offline or online for themselves, so the mode is not restored)."""
    Task.set_offline(True)
    return {
        step.name: CreateFromFunction.create_task_from_function(
            step.function,
            function_kwargs=step.function_kwargs or None,
            function_return=list(step.function_return),
            project_name="mlstack-pipeline-test",
            task_name=step.name,
            packages=step_packages(),
            dry_run=True,
        )["script"]["diff"]
        for step in pipeline_steps()
    }


def test_every_step_script_compiles(built_scripts):
    assert set(built_scripts) == {"prepare", *(f"train_{kind}" for kind in MODEL_KINDS), "select_best", "evaluate"}
    for name, script in built_scripts.items():
        compile(script, f"{name}.py", "exec")


def test_step_scripts_need_nothing_of_mlstack(built_scripts):
    """The agent installs only the step packages: a script importing mlstack would fail there."""
    for name, script in built_scripts.items():
        assert "mlstack" not in script, name


#: Loads each built script as a module (its `__main__` part is the SDK's task plumbing) and chains the
#: step functions as the pipeline does, inside an offline task so the steps' Logger calls work.
_RUN_STEPS = """
import json, runpy, sys
from clearml import Task
Task.set_offline(True)
Task.init(project_name="mlstack-pipeline-test", task_name="steps", auto_connect_frameworks=False)
folder, kinds = sys.argv[1], sys.argv[2].split(",")
step = lambda name: runpy.run_path(f"{folder}/{name}.py", run_name=name)
data = step("prepare")["prepare"]()
results = {kind: step(f"train_{kind}")["train"](data=data, model_kind=kind) for kind in kinds}
best = step("select_best")["select_best"](**results)
print("metrics:", json.dumps(step("evaluate")["evaluate"](best=best, data=data)))
"""


def test_step_scripts_run_the_pipeline_on_real_data(built_scripts, tmp_path, isolated_sdk):
    for name, script in built_scripts.items():
        (tmp_path / f"{name}.py").write_text(script)
    # A fresh process as the agent starts one: none of the SDK's variables that an earlier task in this
    # process exported (CLEARML_PROC_MASTER_ID would make Task.init defer to that task).
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CLEARML_", "TRAINS_"))}
    env.update(CLEARML_OFFLINE_MODE="1", CLEARML_CACHE_DIR=str(isolated_sdk / "steps-cache"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", _RUN_STEPS, str(tmp_path), ",".join(MODEL_KINDS)],
        cwd=tmp_path,  # not the checkout: nothing of mlstack's source is importable by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("metrics: ")]
    metrics = json.loads(line.removeprefix("metrics: "))
    assert metrics["model_kind"] in MODEL_KINDS
    assert 0 < metrics["test_rmse"] < 100 and -1 < metrics["test_r2"] <= 1


def test_steps_install_what_they_import_at_the_versions_here():
    assert step_packages() == [f"{package}=={version(package)}" for package in STEP_PACKAGES]
    source = Path(pipeline_steps()[0].function.__code__.co_filename).read_text()
    imported = {line.split()[1].split(".")[0] for line in source.splitlines() if line.strip().startswith("from ")}
    distributions = {"sklearn": "scikit-learn", "clearml": "clearml"}
    assert {distributions[module] for module in imported} <= set(STEP_PACKAGES)

"""The training pipeline as a ClearML PipelineController:
prepare -> train_{linear, ridge, random_forest} -> select_best -> evaluate (steps in pipeline_steps).

train_<kind> registers the model `<base>-<kind>` and select_best `<base>-best` (base: MODEL_BASE_NAME),
a new version of each per run, with the weights at the output destination.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Literal

from clearml import PipelineController

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.pipeline_steps import evaluate, prepare, register_step_model, select_best, train

MODEL_KINDS = ("linear", "ridge", "random_forest")
#: The registered models' names: `<base>-<kind>` per trained kind and `<base>-best`.
MODEL_BASE_NAME = "diabetes"
#: What every step installs on the agent: the packages the step functions import, at the versions here.
STEP_PACKAGES = ("scikit-learn", "numpy", "clearml")


@dataclass(frozen=True)
class StepSpec:
    """One function step: what `PipelineController.add_function_step` gets."""

    name: str
    function: Callable
    function_kwargs: dict[str, str] = field(default_factory=dict)
    function_return: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    helper_functions: tuple[Callable, ...] = ()


def pipeline_steps(model_base_name: str = MODEL_BASE_NAME) -> list[StepSpec]:
    """prepare -> train_{kind} for each model kind -> select_best -> evaluate."""
    return [
        StepSpec("prepare", prepare, function_return=("data",)),
        *(
            StepSpec(
                f"train_{kind}",
                train,
                {"data": "${prepare.data}", "model_kind": kind, "model_base_name": model_base_name},
                ("result",),
                ("prepare",),
                (register_step_model,),
            )
            for kind in MODEL_KINDS
        ),
        StepSpec(
            "select_best",
            select_best,
            {**{kind: f"${{train_{kind}.result}}" for kind in MODEL_KINDS}, "model_base_name": model_base_name},
            ("best",),
            tuple(f"train_{kind}" for kind in MODEL_KINDS),
            (register_step_model,),
        ),
        StepSpec(
            "evaluate",
            evaluate,
            {"best": "${select_best.best}", "data": "${prepare.data}"},
            ("metrics",),
            ("select_best", "prepare"),
        ),
    ]


def step_packages() -> list[str]:
    return [f"{package}=={version(package)}" for package in STEP_PACKAGES]


def build_pipeline(
    project: str,
    queue: str,
    output_uri: str,
    name: str = "mlstack training pipeline",
    model_base_name: str = MODEL_BASE_NAME,
) -> PipelineController:
    """The controller with its six steps; steps run on `queue` unless started locally.

    The step tasks, and so the models they register, go to `project` itself (ClearML's default, the
    hidden `<project>/.pipelines/<name>`, is a subproject: `Model.query_models(project_name=project)`
    would not find them); their weights and artifacts go to `output_uri`."""
    pipe = PipelineController(
        name=name,
        project=project,
        version="1.0.0",
        add_pipeline_tags=True,
        target_project=project,
        output_uri=output_uri,
    )
    pipe.set_default_execution_queue(queue)
    for step in pipeline_steps(model_base_name):
        pipe.add_function_step(
            name=step.name,
            function=step.function,
            function_kwargs=step.function_kwargs or None,
            function_return=list(step.function_return),
            parents=list(step.parents) or None,
            packages=step_packages(),
            helper_functions=list(step.helper_functions) or None,
            cache_executed_step=False,
        )
    return pipe


def run_pipeline(
    settings: ClientSettings,
    project: str = "mlstack",
    where: Literal["local", "agent"] = "local",
    queue: str | None = None,
) -> str:
    """Run the pipeline to completion and return the controller's task id.

    "local": every step runs here as a subprocess. "agent": the controller runs here and each step
    is enqueued on `queue` (default CLEARML_DEFAULT_QUEUE) for the agent (`--profile agent`). Model
    weights go to `settings.clearml_output_destination` (CLEARML_DEFAULT_OUTPUT_URI, else the fileserver).
    """
    require_server(settings)
    pipe = build_pipeline(project, queue or settings.clearml_default_queue, settings.clearml_output_destination)
    pipe.start_locally(run_pipeline_steps_locally=where == "local")
    return pipe.id

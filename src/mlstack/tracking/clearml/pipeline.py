"""The training pipeline as a ClearML PipelineController:
prepare -> train_{linear, ridge, random_forest} -> select_best -> evaluate (steps in pipeline_steps).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Literal

from clearml import PipelineController

from mlstack.client_settings import ClientSettings
from mlstack.tracking.clearml.connection import require_server
from mlstack.tracking.clearml.pipeline_steps import evaluate, prepare, select_best, train

MODEL_KINDS = ("linear", "ridge", "random_forest")
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


def pipeline_steps() -> list[StepSpec]:
    """prepare -> train_{kind} for each model kind -> select_best -> evaluate."""
    return [
        StepSpec("prepare", prepare, function_return=("data",)),
        *(
            StepSpec(
                f"train_{kind}",
                train,
                {"data": "${prepare.data}", "model_kind": kind},
                ("result",),
                ("prepare",),
            )
            for kind in MODEL_KINDS
        ),
        StepSpec(
            "select_best",
            select_best,
            {kind: f"${{train_{kind}.result}}" for kind in MODEL_KINDS},
            ("best",),
            tuple(f"train_{kind}" for kind in MODEL_KINDS),
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


def build_pipeline(project: str, queue: str, name: str = "mlstack training pipeline") -> PipelineController:
    """The controller with its six steps; steps run on `queue` unless started locally."""
    pipe = PipelineController(name=name, project=project, version="1.0.0", add_pipeline_tags=True)
    pipe.set_default_execution_queue(queue)
    for step in pipeline_steps():
        pipe.add_function_step(
            name=step.name,
            function=step.function,
            function_kwargs=step.function_kwargs or None,
            function_return=list(step.function_return),
            parents=list(step.parents) or None,
            packages=step_packages(),
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
    is enqueued on `queue` (default CLEARML_DEFAULT_QUEUE) for the agent (`--profile agent`).
    """
    require_server(settings)
    pipe = build_pipeline(project, queue or settings.clearml_default_queue)
    pipe.start_locally(run_pipeline_steps_locally=where == "local")
    return pipe.id

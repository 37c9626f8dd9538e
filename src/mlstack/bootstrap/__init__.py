"""Bootstrap of a running stack: ordered, idempotent steps that each report what they did."""

from mlstack.bootstrap.mlflow import CLIENT_STEPS
from mlstack.bootstrap.steps import Outcome, Step, StepResult, run_steps
from mlstack.bootstrap.storage import STORAGE_STEPS

MLFLOW_STACK_STEPS = (*STORAGE_STEPS, *CLIENT_STEPS)

__all__ = ["MLFLOW_STACK_STEPS", "STORAGE_STEPS", "Outcome", "Step", "StepResult", "run_steps"]

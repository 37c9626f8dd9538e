"""Bootstrap of a running stack: ordered, idempotent steps that each report what they did."""

from mlstack.bootstrap.minio import MINIO_STEPS
from mlstack.bootstrap.mlflow import CLIENT_STEPS
from mlstack.bootstrap.steps import Outcome, Step, StepResult, run_steps

MLFLOW_STACK_STEPS = (*MINIO_STEPS, *CLIENT_STEPS)

__all__ = ["MINIO_STEPS", "MLFLOW_STACK_STEPS", "Outcome", "Step", "StepResult", "run_steps"]

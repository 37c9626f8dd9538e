"""What every command group shares: the app, the console, the options, and the project's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from mlstack.client_settings import is_project_dir
from mlstack.errors import ProjectNotFoundError
from mlstack.settings import RuntimeName, Settings

if TYPE_CHECKING:
    from mlstack.bootstrap.steps import StepResult

app = typer.Typer(
    help="MLflow (and ClearML) stacks in a box.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
StackOption = Annotated[
    Literal["mlflow", "clearml", "all"], typer.Option("--stack", help="mlflow, clearml, or all (clearml needs docker).")
]
RuntimeOption = Annotated[
    RuntimeName | None, typer.Option("--runtime", help="docker, native, or auto (docker when an engine answers).")
]


def load_settings() -> Settings:
    return Settings.load()


def project_settings() -> Settings:
    """Settings of the project the command runs in; ProjectNotFoundError outside one."""
    settings = load_settings()
    if not is_project_dir(settings.project_dir):
        raise ProjectNotFoundError(settings.project_dir)
    return settings


def report_step(result: StepResult) -> None:
    console.print(f"{result.step}: [bold]{result.outcome}[/] {result.detail}")

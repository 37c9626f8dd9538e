"""`mlstack bootstrap`: the ordered, idempotent steps against the running stacks."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from mlstack.cli.common import StackOption, app, console, load_settings, project_settings, report_step
from mlstack.errors import MlstackError


@app.command()
def bootstrap(
    stack: StackOption = "all",
    storage_only: Annotated[
        bool, typer.Option(help="Only the artifact store's steps (the compose stack's storage-bootstrap service).")
    ] = False,
    database_only: Annotated[
        bool, typer.Option(help="Only the PostgreSQL steps (the compose stack's database-bootstrap service).")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(help="Seconds to keep trying a service that does not answer yet (the compose one-shots).", min=0),
    ] = 0.0,
) -> None:
    """Ordered, idempotent steps against the running stacks: MLflow's bucket, server identity,
    client settings and client account; ClearML's client credentials, clearml.conf and default queue."""
    from mlstack.bootstrap import MLFLOW_STACK_STEPS, STORAGE_STEPS, Outcome, run_steps
    from mlstack.bootstrap.database import DATABASE_STEPS
    from mlstack.bootstrap.preflight import require_mlflow_stack

    run = partial(run_steps, report=report_step, wait=wait, waiting=console.print)
    if database_only:
        run(DATABASE_STEPS, load_settings())
        return
    settings = load_settings() if storage_only else project_settings()
    steps = []
    if stack != "clearml":
        require_mlflow_stack(settings, storage_only, wait=wait, waiting=console.print)
        steps = list(STORAGE_STEPS if storage_only else MLFLOW_STACK_STEPS)
    if stack != "mlflow" and not storage_only:
        from mlstack.bootstrap.clearml import clearml_steps
        from mlstack.health import clearml_answers

        if clearml_answers(settings.clearml_api_url):
            steps += clearml_steps()
        else:
            problem = f"no ClearML apiserver answers at {settings.clearml_api_url}"
            if stack == "clearml":
                raise MlstackError(f"{problem}: start it with `make up STACK=clearml` (docker runtime).")
            console.print(f"[yellow]skipping ClearML bootstrap:[/] {problem}")
    results = run(steps, settings)
    if all(r.outcome == Outcome.PRESENT for r in results):
        console.print("bootstrap: everything already present; nothing changed")

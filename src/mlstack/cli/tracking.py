"""The tracking library's commands: sync (what the tracker spooled) and demo."""

from __future__ import annotations

from typing import Annotated

import typer

from mlstack.cli.common import app, console, load_settings


@app.command()
def sync(
    tracking_uri: Annotated[
        str | None, typer.Option(help="Send to this server instead of the one each spool file names.")
    ] = None,
) -> None:
    """Replay what the tracker spooled during a server outage (state folder's spool/): points, then run ends.

    What the server refuses for good, and lines a crash or a full disk cut, are set aside in spool/rejected/
    with the reason, and the exit code is 1."""
    from mlstack.tracking.mlflow.config import use_credentials
    from mlstack.tracking.mlflow.spool import replay_run_ends, replay_spool

    settings = load_settings()
    use_credentials(settings)
    points = replay_spool(settings, tracking_uri=tracking_uri)
    ends = replay_run_ends(settings, tracking_uri=tracking_uri)
    rejected = points.rejected + ends.rejected
    if not (points.sent_points or ends.ended_runs or rejected):
        console.print("sync: nothing spooled")
        return
    ended = f", ended {ends.ended_runs} runs" if ends.ended_runs else ""
    console.print(f"sync: sent {points.sent_points} spooled points{ended}")
    for item in rejected:
        line = f"sync: set aside in {item.path}: {item.reason}"
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if rejected:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """Train, compare and register models on scikit-learn's diabetes data, tracked to MLflow and ClearML
    (MLSTACK_TRACKERS); without a stack, to the local store and ClearML offline. Plots go to reports/demo/."""
    from mlstack.demo import run_demo

    run_demo(load_settings(), console)

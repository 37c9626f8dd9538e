"""The `mlstack` command: one module per command group, each importing what its commands need
when they run, so `mlstack --help` loads none of MLflow, ClearML, boto3 or psycopg.

- `stack`: init, up, down, status, doctor, check-secrets, install-tools
- `bootstrap`: bootstrap
- `tracking`: sync, demo
- `clearml`: clearml sync, clearml pipeline run|monitor|schedule
- `users`: user add|remove
- `workspaces`: workspace add|list|grant
- `maintenance`: backup, restore, upgrade, gc
- `monitoring`: monitoring exporter
"""

from __future__ import annotations

import importlib

from rich.markup import escape

from mlstack.cli.common import app, console
from mlstack.errors import MlstackError

#: The command groups, in the order `mlstack --help` lists them (importing one registers its commands).
GROUPS = ("stack", "bootstrap", "tracking", "clearml", "users", "workspaces", "maintenance", "monitoring")
for group in GROUPS:
    importlib.import_module(f"mlstack.cli.{group}")


def main() -> None:
    try:
        app()
    except MlstackError as error:
        console.print("[bold red]error:[/]", escape(str(error)), soft_wrap=True)
        raise SystemExit(1) from None


__all__ = ["app", "main"]

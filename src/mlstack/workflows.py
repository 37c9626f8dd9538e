"""What a person does with a stack, whatever runs it: `up` with its bootstrap steps, backup, restore,
upgrade, gc. Each stack's service holds its runtime (the driver that starts, stops and reaches the
services: mlstack.runtime) and calls the steps (mlstack.bootstrap) and maintenance
(mlstack.maintenance) in the order the workflow needs; the CLI only picks the stack and prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mlstack.bootstrap import StepResult
from mlstack.errors import MlstackError
from mlstack.maintenance.template import Backup
from mlstack.runtime import Runtime
from mlstack.secrets import check_secrets
from mlstack.settings import Settings


@dataclass
class StackService:
    settings: Settings
    runtime: Runtime
    console: Console

    @property
    def stack(self) -> str:
        return self.runtime.stack

    def preflight(self) -> None:
        """Refuse placeholder, default or short secrets before anything starts."""
        check_secrets(self.settings, self.stack)

    def up(self) -> bool:
        """Start what is not running and healthy (False: nothing was); `preflight` first."""
        raise NotImplementedError

    def _report(self, result: StepResult) -> None:
        self.console.print(f"  {result.step}: {result.outcome} ({result.detail})")


class MlflowService(StackService):
    def up(self) -> bool:
        """The stack, then the client account in .env (the team's scripts log in with it)."""
        from mlstack.maintenance.minio_move import move_pending
        from mlstack.runtime.native.tools import install_tools

        if self.runtime.name == "native":
            install_tools(self.settings, self.console, minio=move_pending(self.settings))
        started = self.runtime.up()
        self.client_account()
        return started

    def client_account(self) -> None:
        from mlstack.bootstrap import run_steps
        from mlstack.bootstrap.mlflow import CLIENT_STEPS

        run_steps(CLIENT_STEPS, self.settings, self._report)
        self.settings = Settings.load(self.settings.project_dir)

    def backup(self, output: Path, include_secrets: bool = False) -> Backup:
        from mlstack.maintenance.mlflow import backup_mlflow

        return backup_mlflow(self.settings, self.runtime, output, self.console, include_secrets)

    def restore(self, archive: Path, force: bool = False) -> dict[str, int]:
        """The archive's data; the stack's own logins (admin, client account) kept working."""
        from mlstack.maintenance.mlflow import restore_mlflow

        counts = restore_mlflow(self.settings, self.runtime, archive, self.console, force=force)
        self.client_account()
        return counts

    def upgrade(self) -> Path:
        from mlstack.maintenance.mlflow import upgrade_mlflow

        return upgrade_mlflow(self.settings, self.runtime, self.settings.backup_path, self.console)


class ClearmlService(StackService):
    def up(self) -> bool:
        from mlstack.doctor import check_max_map_count

        if problem := check_max_map_count():
            self.console.print(f"[yellow]warning:[/] {problem}")
        return self.runtime.up()

    def backup(self, output: Path, include_secrets: bool = False) -> Backup:
        from mlstack.maintenance.clearml import backup_clearml

        return backup_clearml(self.runtime, output, self.console)

    def restore(self, archive: Path, force: bool = False) -> dict[str, int]:
        from mlstack.maintenance.clearml import restore_clearml

        return restore_clearml(self.runtime, archive, self.console, force=force)

    def upgrade(self) -> Path:
        """Refuse a version jump upstream forbids, back up, start the new version; when it does not come
        up healthy, restore the backup and say so."""
        from mlstack.maintenance.clearml import backup_clearml, check_upgrade, restore_clearml

        target = check_upgrade(self.runtime)
        archive = backup_clearml(self.runtime, self.settings.backup_path, self.console).path
        try:
            self.runtime.up(refresh=True)
        except MlstackError as failure:
            restore_clearml(self.runtime, archive, self.console, force=True)
            raise MlstackError(f"ClearML server {target} did not come up ({failure}); restored {archive}") from None
        return archive


def stack_service(settings: Settings, runtime: Runtime, console: Console) -> StackService:
    """The service of `runtime`'s stack."""
    return (MlflowService if runtime.stack == "mlflow" else ClearmlService)(settings, runtime, console)

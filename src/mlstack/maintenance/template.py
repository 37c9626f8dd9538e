"""The one way every stack is backed up and restored; what differs is the stack's components.

A component (a database, a bucket, an index store, a folder of files) dumps itself into the
archive's folder and says what it dumped (counts), puts an archive's dump back, and counts what
it holds now. Backup: every component in order, one checksummed archive (mlstack.maintenance.archive).
Restore: the archive checked whole, refused when the stack cannot take it or holds something
(unless forced), the servers stopped, every component restored, the counts verified against the
archive's, and the servers started again whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Protocol

from rich.console import Console

from mlstack.errors import BackupError
from mlstack.maintenance.archive import Manifest, read_archive, write_archive


class Component(Protocol):
    name: str

    def dump(self, folder: Path, console: Console) -> dict[str, int]:
        """Write this component's data under `folder`; the counts of what was written."""

    def restore(self, folder: Path, manifest: Manifest, console: Console) -> None:
        """Replace this component's data by the dump under `folder` (of the archive `manifest` describes)."""

    def counts(self) -> dict[str, int]:
        """What this component holds now (the keys its dump reports)."""


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest: Manifest


@dataclass
class StackData:
    """A stack's data: its components in dump order, and how its servers stop and start."""

    stack: str
    components: Sequence[Component]
    #: Stop what writes to the components (the stores keep running).
    stop_servers: Callable[[], None]
    start_servers: Callable[[], None]
    #: Why the stack cannot take this archive (versions), or None.
    refusal: Callable[[Manifest], str | None]
    #: What the stack holds that a restore would replace, described; None when there is nothing.
    holding: Callable[[dict[str, int]], str | None]

    def counts(self) -> dict[str, int]:
        return {key: value for component in self.components for key, value in component.counts().items()}

    def backup(self, output: Path, name: str, versions: dict[str, str], console: Console) -> Backup:
        """One archive `<name>.tar` in `output` (made private when made here)."""
        output.mkdir(parents=True, exist_ok=True, mode=0o700)
        with TemporaryDirectory(dir=output, prefix=".mlstack-backup-") as temporary:
            folder, counts = Path(temporary), {}
            for component in self.components:
                counts |= component.dump(folder, console)
            manifest = Manifest(self.stack, datetime.now(UTC).isoformat(), versions, counts)
            with console.status("writing the archive"):
                return Backup(write_archive(folder, manifest, output / f"{name}.tar"), manifest)

    def restore(self, archive: Path, scratch: Path, console: Console, force: bool = False) -> dict[str, int]:
        """Restore `archive` (unpacked under `scratch`); returns the counts verified."""
        with TemporaryDirectory(dir=scratch, prefix=".restore-") as temporary:
            folder = Path(temporary)
            with console.status("checking the archive"):
                manifest = read_archive(archive, folder)
            if manifest.stack != self.stack:
                raise BackupError(f"{archive} is a backup of the {manifest.stack} stack, not of the {self.stack} stack")
            if problem := self.refusal(manifest):
                raise BackupError(f"{archive} cannot be restored here: {problem}; nothing was changed")
            if not force and (held := self.holding(self.counts())):
                raise BackupError(
                    f"the {self.stack} stack is not empty ({held}): restore onto a freshly started stack, "
                    "or pass --force to replace everything in it; nothing was changed"
                )
            self.stop_servers()
            try:
                for component in self.components:
                    component.restore(folder, manifest, console)
            except Exception as error:
                raise BackupError(
                    f"restore from {archive} failed midway ({error}); the stack is partly restored and running again: "
                    f"run `mlstack restore {archive} --force` again once the cause is fixed"
                ) from error
            else:
                return verified(manifest, self.counts(), archive)
            finally:
                self.start_servers()


def verified(manifest: Manifest, restored: dict[str, int], archive: Path) -> dict[str, int]:
    """`restored`, which must hold the archive's counts."""
    differences = {
        key: (expected, restored.get(key)) for key, expected in manifest.counts.items() if restored.get(key) != expected
    }
    if differences:
        listed = ", ".join(f"{key}: {got} instead of {expected}" for key, (expected, got) in differences.items())
        raise BackupError(f"restored from {archive}, but the counts differ from the archive's: {listed}")
    return restored

"""The backup archive: a tar of a folder (database dumps, bucket objects, optionally .env) with
`manifest.json`, which names every other file with its SHA-256, and what the stack held.

An archive is written under a `.partial` name and renamed when complete, so a failed backup leaves
nothing that looks like one. Reading checks every file against the manifest before anything is
used; the archive is written 0600 (it holds every run, and the auth database's password hashes).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlstack.errors import BackupError

FORMAT = 1
MANIFEST = "manifest.json"
CHUNK = 1024 * 1024


@dataclass
class Manifest:
    stack: str
    created: str
    #: Component versions (mlflow, postgres, the S3 store, mlstack) and the schema revisions.
    versions: dict[str, str]
    #: What the stack held: rows per table, objects and bytes in the bucket.
    counts: dict[str, int]
    #: SHA-256 of every file but the manifest, by its path in the archive.
    files: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_archive(folder: Path, manifest: Manifest, destination: Path) -> Path:
    """Checksum every file in `folder`, add the manifest, and tar it all to `destination` (0600),
    which appears only once complete."""
    manifest.files = {
        path.relative_to(folder).as_posix(): sha256_of(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(manifest.to_json())
    partial = destination.with_name(f".{destination.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle, tarfile.open(fileobj=handle, mode="w") as archive:
            archive.add(folder / MANIFEST, arcname=MANIFEST)
            for name in manifest.files:
                archive.add(folder / name, arcname=name)
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def archive_stack(archive_path: Path) -> str:
    """Which stack an archive holds, from its manifest alone (nothing else is read or checked)."""
    try:
        with tarfile.open(archive_path, mode="r:*") as archive:
            member = archive.extractfile(MANIFEST)
            return json.loads(member.read())["stack"] if member else ""
    except (tarfile.TarError, EOFError, OSError, KeyError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise BackupError(f"{archive_path} is not a readable backup archive ({reason}): nothing was changed") from None


def read_archive(archive_path: Path, into: Path) -> Manifest:
    """Unpack `archive_path` into `into` and check it whole: the manifest, and every file it names
    with its checksum (no file missing, none added). Raises BackupError naming the first problem."""
    if not archive_path.is_file():
        raise BackupError(f"{archive_path}: no such archive")
    try:
        with tarfile.open(archive_path, mode="r:*") as archive:
            archive.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError) as error:
        reason = " ".join(str(error).split())  # tarfile's reasons span lines
        raise BackupError(f"{archive_path} is not a readable backup archive ({reason}): nothing was changed") from None
    try:
        data: dict[str, Any] = json.loads((into / MANIFEST).read_text())
        manifest = Manifest(**data)
    except (OSError, ValueError, TypeError) as error:
        raise BackupError(f"{archive_path} has no valid {MANIFEST} ({error}): nothing was changed") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{archive_path} is archive format {manifest.format}; this mlstack reads {FORMAT}")
    present = {path.relative_to(into).as_posix() for path in into.rglob("*") if path.is_file()} - {MANIFEST}
    if missing := sorted(set(manifest.files) - present):
        raise BackupError(
            f"{archive_path} lacks {len(missing)} files its manifest names (first: {missing[0]}): nothing was changed"
        )
    if extra := sorted(present - set(manifest.files)):
        raise BackupError(
            f"{archive_path} holds files its manifest does not name (first: {extra[0]}): nothing was changed"
        )
    for name, expected in manifest.files.items():
        if sha256_of(into / name) != expected:
            raise BackupError(
                f"{archive_path}: {name} does not match its checksum (the archive is damaged): nothing was changed"
            )
    return manifest

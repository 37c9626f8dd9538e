"""Local processes with a pid file and a log file each, started in their own session.

A whole process group is stopped at once: `mlflow server` leaves worker and job-runner processes
behind when only its main pid is signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

#: The environment a service inherits from ours; everything else (root secrets above all) is left out.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def base_env() -> dict[str, str]:
    """What every service starts with: INHERITED_ENV, this interpreter's folder first on the PATH."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    return env


@dataclass
class ManagedProcess:
    name: str
    run_dir: Path
    log_dir: Path
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid while that process is alive, else None."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        except PermissionError:
            return pid
        return None if _is_zombie(pid) else pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def start(self, command: list[str], env: dict[str, str], user: str | None = None, cwd: Path | None = None) -> int:
        """Start `command` detached (as `user`, in `cwd`), output appended to the owner-only log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """Signal the process group, escalate to SIGKILL after `timeout`; False if it was not running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, self.stop_signal)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def group(self) -> list[int]:
        """Every live process of this service's group (its workers and helpers too)."""
        pid = self.pid()
        return group_members(pid) if pid is not None else []

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would (fault tests)."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid):
                time.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return "(no log yet)"
        with self.log_file.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True

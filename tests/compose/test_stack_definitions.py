"""The compose files against the stack definitions (mlstack.stacks), field by field: a service
added, renamed, re-pinned or re-ordered in one and not the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from mlstack.settings import Settings
from mlstack.stacks import Service, Stack
from mlstack.stacks.clearml import CLEARML_STACK
from mlstack.stacks.mlflow import ETCD_IMAGE, HAPROXY_IMAGE, MLFLOW_STACK

INFRA = Path(__file__).resolve().parents[2] / "infra"
STACKS = {"mlflow": MLFLOW_STACK, "clearml": CLEARML_STACK}
#: A probe named in a definition, and the program its compose health check runs.
PROBES = {"postgres": "pg_isready", "mongo": "mongosh", "redis": "redis-cli"}
#: Images with neither an HTTP client nor the probe program (compose.ha.yaml), and what their check
#: sends instead: etcdctl's health check (what GET /health asks), PostgreSQL's SSLRequest (its code
#: 80877103 in bash printf's octal escapes) through HAProxy.
IMAGE_PROBES = {(ETCD_IMAGE, "/health"): "endpoint health", (HAPROXY_IMAGE, "postgres"): r"\4\322\26\57"}
#: "${BIND:-127.0.0.1}:${VARIABLE:-default}:container" (a variable may hold digits: S3_PORT)
PUBLISHED = re.compile(r"^\$\{[A-Z0-9_]+:-[^}]*\}:\$\{(?P<variable>[A-Z][A-Z0-9_]*):-\d+\}:(?P<container>\d+)$")


def compose_services(stack: str) -> dict[str, dict]:
    return yaml.safe_load((INFRA / stack / "compose.yaml").read_text())["services"]


def cases() -> list:
    return [
        pytest.param(stack, service, id=f"{stack}-{service.name}")
        for stack, definition in STACKS.items()
        for service in definition.services
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_each_compose_file_has_exactly_the_defined_services(stack):
    assert set(compose_services(stack)) == {service.name for service in STACKS[stack].services}


@pytest.mark.parametrize(("stack", "service"), cases())
def test_each_service_is_composed_as_defined(stack: str, service: Service):
    check_composed(compose_services(stack)[service.name], service, STACKS[stack])


def check_composed(composed: dict, service: Service, definition: Stack) -> None:
    """`composed` (a service as a compose file writes it, or as `compose config --no-interpolate`
    merges files) is `service` of `definition`, field by field."""
    assert composed["image"] == service.image
    waits = composed.get("depends_on") or {}
    assert set(waits) == set(service.waits_for)
    for name, how in waits.items():
        waited = definition[name]
        assert how["condition"] == ("service_completed_successfully" if waited.one_shot else "service_healthy"), name
        # a service in a profile the waiting one is not in may be off: waited for only when it is on
        optional = waited.profile is not None and waited.profile != service.profile
        assert how.get("required", True) is not optional, name
    published = [PUBLISHED.match(port) for port in composed.get("ports", [])]
    assert all(published), composed.get("ports")
    assert [(match["variable"], int(match["container"])) for match in published] == [
        (port.variable, port.container) for port in service.ports
    ]
    volumes = [v.split(":")[0] if isinstance(v, str) else v["source"] for v in composed.get("volumes") or []]
    assert {volume for volume in volumes if re.fullmatch(r"[a-z][a-z0-9_-]*", volume)} == set(service.data)
    assert composed.get("profiles") == ([service.profile] if service.profile else None)
    assert composed.get("restart") == ("no" if service.one_shot else "unless-stopped")
    check = " ".join(composed.get("healthcheck", {}).get("test", []))
    if service.health is None:
        assert not check
    else:
        probe = IMAGE_PROBES.get((service.image, service.health)) or PROBES.get(service.health, service.health)
        assert probe in check, (service.name, check)


def test_a_service_cannot_wait_for_one_defined_after_it():
    with pytest.raises(ValueError, match="b waits for \\['c'\\]"):
        Stack("s", (Service("a", "a:1"), Service("b", "b:1", waits_for=("c",)), Service("c", "c:1")))


def test_no_image_is_unpinned():
    for definition in STACKS.values():
        for service in definition.services:
            assert ":" in service.image and not service.image.endswith(":latest"), service.image


#: "${VARIABLE:-fallback}" in a compose file
FALLBACK = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")
#: Unset in Settings, with compose's fallback for each.
UNSET_IN_SETTINGS = {
    # mlstack generates them; compose falls back to where they are generated
    "MLFLOW_TLS_CERT": "../../.mlstack/tls/server.pem",
    "MLFLOW_TLS_KEY": "../../.mlstack/tls/server-key.pem",
    # unset: the stack's own SeaweedFS (the native runtime's is 127.0.0.1:S3_PORT, Settings.s3_url);
    # inside the compose network that is the seaweedfs service
    "MLSTACK_S3_ENDPOINT": "http://seaweedfs:8333",
    # a stack made before SeaweedFS has it in .env (its MinIO's root password, a secret: Settings'
    # default is an empty SecretStr); blank in any other, where the minio-move profile stays off
    "MINIO_ROOT_PASSWORD": "",
    # monitoring: the server's metrics address `mlstack up` sets with MLSTACK_MONITORING=true (none by
    # default); the ids the exporter reads the project's files as (`mlstack up`: yours); the state and
    # backup folders it reads (Settings: under the project, .mlstack)
    "MLSTACK_METRICS_ADDRESS": "",
    "MLSTACK_UID": "1000",
    "MLSTACK_GID": "1000",
    "MLSTACK_STATE_DIR": "../../.mlstack",
    "MLSTACK_BACKUP_DIR": "../../.mlstack/backups",
}


def settings_defaults() -> dict[str, str]:
    """Each setting's default as compose would write it, by its .env name (none for a secret or an unset one)."""
    defaults = {}
    for name, field in Settings.model_fields.items():
        value = None if field.default_factory else field.default
        if value is not None and not isinstance(value, SecretStr):
            defaults[(field.alias or name).upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return defaults


@pytest.mark.parametrize("stack", STACKS)
def test_every_compose_fallback_is_the_settings_default(stack):
    """One default per setting: a compose file's fallback for a variable is Settings' default for it."""
    fallbacks = set(FALLBACK.findall((INFRA / stack / "compose.yaml").read_text()))
    assert fallbacks
    assert not UNSET_IN_SETTINGS.keys() & settings_defaults().keys(), "a setting with a default is not unset"
    defaults = settings_defaults() | UNSET_IN_SETTINGS
    assert {(variable, value) for variable, value in fallbacks if defaults.get(variable) != value} == set()

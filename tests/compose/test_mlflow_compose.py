"""infra/mlflow/compose.yaml: static checks, then validation with the real compose CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlstack_mlflow_store.launch import auth_config, prepare

from mlstack.bootstrap.storage import seaweedfs_identities
from mlstack.envfile import update_env
from mlstack.runtime.native.seaweedfs import identities_json
from mlstack.runtime.native.server import gunicorn_options, mlflow_server_command, mlflow_server_env
from mlstack.runtime.native.tools import SEAWEEDFS_VERSION
from mlstack.settings import Settings
from mlstack.stacks.mlflow import MINIO_IMAGE, MLFLOW_STACK
from tests.compose.conftest import run_compose

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "infra" / "mlflow" / "compose.yaml"
ONE_SHOT = {"preflight", "database-bootstrap", "storage-bootstrap", "minio-move", "migrate", "monitoring-config"}
#: The services of a stack made before SeaweedFS: its MinIO, and the one-shot moving its objects.
MINIO_MOVE = {"minio", "minio-move"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_one_shot_steps_are_exactly_the_services_that_do_not_restart(compose):
    assert {name for name, s in compose["services"].items() if s.get("restart") == "no"} == ONE_SHOT


def test_every_long_running_service_has_a_healthcheck_from_the_shared_anchor(compose):
    shared = compose["x-healthcheck"]
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            continue
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        assert {key: service["healthcheck"][key] for key in shared} == shared, f"{name} overrides the timings"


def test_every_image_is_pinned(compose):
    for name, service in compose["services"].items():
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {service['image']!r} is not pinned"
    # the native runtime's `weed` is the image's version; MinIO is its last community image
    assert compose["services"]["seaweedfs"]["image"] == f"chrislusf/seaweedfs:{SEAWEEDFS_VERSION}"
    assert compose["services"]["minio"]["image"] == MINIO_IMAGE == "minio/minio:RELEASE.2025-09-07T16-13-09Z"


def test_dockerfiles_pin_their_base_images():
    for dockerfile in (PROJECT_DIR / "services").glob("*/Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                assert ":" in image and not image.endswith(":latest"), f"{dockerfile}: {line}"


def test_server_waits_for_healthy_stores_and_finished_one_shot_steps(compose):
    services = compose["services"]
    depends = services["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == depends["seaweedfs"]["condition"] == "service_healthy"
    for step in ("migrate", "storage-bootstrap", "minio-move"):
        assert depends[step]["condition"] == "service_completed_successfully", step
    # the move runs in its profile only: the server waits for it then, and starts without it otherwise
    assert {name for name, how in depends.items() if how.get("required", True) is False} == {"minio-move"}
    for store in ("postgres", "seaweedfs", "minio"):
        assert services[store]["depends_on"]["preflight"]["condition"] == "service_completed_successfully"
    # the move reads a healthy MinIO into a store whose bucket and identities are in place
    move = services["minio-move"]["depends_on"]
    assert move["minio"]["condition"] == "service_healthy"
    assert move["storage-bootstrap"]["condition"] == "service_completed_successfully"


def test_server_uses_its_own_s3_identity_and_proxies_artifacts(compose):
    server = compose["services"]["mlflow"]
    environment = server["environment"]
    assert environment["AWS_ACCESS_KEY_ID"].startswith("${MLFLOW_S3_ACCESS_KEY")
    assert environment["AWS_SECRET_ACCESS_KEY"].startswith("${MLFLOW_S3_SECRET_KEY")
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "${MLSTACK_S3_ENDPOINT:-http://seaweedfs:8333}"
    # neither the store's admin nor the old MinIO's root account
    for admin in ("S3_ADMIN", "MINIO_ROOT"):
        assert not any(admin in name or admin in str(value) for name, value in environment.items()), admin
    assert any(arg.startswith("--artifacts-destination=s3://") for arg in server["command"])
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" in environment


def test_compose_cli_accepts_the_stack(compose_cli, generated_env):
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_published_ports_bind_to_loopback_by_default(compose_cli, generated_env):
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    ports = [port for s in json.loads(result.stdout)["services"].values() for port in s.get("ports", [])]
    assert {port["published"] for port in ports} == {"5432", "8333", "5000"}
    assert {port["host_ip"] for port in ports} == {"127.0.0.1"}


def test_compose_cli_refuses_a_missing_secret(compose_cli, generated_env):
    lines = generated_env.read_text().splitlines()
    generated_env.write_text("\n".join(line for line in lines if not line.startswith("POSTGRES_PASSWORD=")))
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--quiet")
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD is not set" in result.stderr


def test_a_secret_with_a_dollar_is_refused_since_compose_would_hand_the_services_another_value(
    compose_cli, generated_env
):
    from tests.conftest import run_mlstack

    value = "user-chosen-$HOME-password"
    update_env(generated_env, {"POSTGRES_PASSWORD": value})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] != value
    refused = run_mlstack(generated_env.parent, "check-secrets", "--stack", "mlflow")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "POSTGRES_PASSWORD is written with '$'" in output, output
    assert value not in output


def test_server_options_come_from_env_and_match_the_native_runtime(compose_cli, generated_env):
    update_env(generated_env, {"MLFLOW_WORKERS": "3", "MLFLOW_THREADS": "5", "MLFLOW_WORKER_TIMEOUT": "77"})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)["services"]["mlflow"]["command"]
    settings = Settings.load(generated_env.parent)

    assert "--workers=3" in command
    assert f"--gunicorn-opts={gunicorn_options(settings)}" in command
    assert "--threads 5" in gunicorn_options(settings) and "--timeout 77" in gunicorn_options(settings)


def test_request_guard_limits_come_from_env_and_match_the_native_runtime(compose_cli, generated_env):
    from mlstack.runtime.native.server import GUARD_VARIABLES, tls_front_env
    from mlstack.tls import TlsFiles

    update_env(generated_env, {"MLSTACK_MAX_REQUEST_BYTES": "2048", "MLSTACK_MAX_PAGE_SIZE": "77"})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "--profile", "tls", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    settings = Settings.load(generated_env.parent)
    native = mlflow_server_env(settings)
    assert {name: services["mlflow"]["environment"][name] for name in GUARD_VARIABLES} == {
        name: native[name] for name in GUARD_VARIABLES
    }
    assert native["MLSTACK_MAX_REQUEST_BYTES"] == "2048" and native["MLSTACK_MAX_PAGE_SIZE"] == "77"
    # the TLS front lets no body past the largest limit through, on either runtime
    front = tls_front_env(settings, TlsFiles(cert=Path("c"), key=Path("k"), ca=Path("a")))
    largest = "MLSTACK_MAX_ARTIFACT_BYTES"
    assert services["tls-proxy"]["environment"][largest] == front[largest] == native[largest]


@pytest.mark.parametrize("value", ["true", "false"])
def test_fast_store_switch_comes_from_env_and_matches_the_native_runtime(compose_cli, generated_env, value):
    update_env(generated_env, {"MLSTACK_FAST_STORE": value})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)["services"]["mlflow"]["environment"]

    assert environment["MLSTACK_FAST_STORE"] == value
    assert mlflow_server_env(Settings.load(generated_env.parent))["MLSTACK_FAST_STORE"] == value


def test_backend_store_works_with_a_password_that_needs_uri_quoting(compose_cli, generated_env):
    from sqlalchemy.engine import make_url

    password = "p@ss/w:rd%41-and-more-characters"
    update_env(generated_env, {"MLFLOW_DB_PASSWORD": password})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    native = Settings.load(generated_env.parent).backend_store_env()

    for name in ("migrate", "mlflow"):
        environment = services[name]["environment"]
        url = make_url(environment["MLFLOW_BACKEND_STORE_URI"])
        assert (url.username, url.password, url.host, url.port, url.database) == (
            "mlflow_server",
            None,
            "postgres",
            5432,
            "mlflow",
        )
        assert environment["PGPASSWORD"] == password  # libpq reads it verbatim: nothing to quote
        assert environment.keys() >= native.keys()
    assert services["database-bootstrap"]["environment"]["MLFLOW_DB_PASSWORD"] == password
    assert make_url(native["MLFLOW_BACKEND_STORE_URI"]).password is None and native["PGPASSWORD"] == password


def test_each_secret_reaches_only_the_services_that_use_it(compose_cli, generated_env):
    # a stack made before SeaweedFS: its MinIO's root password in .env; every profile on
    update_env(generated_env, {"MINIO_ROOT_PASSWORD": "the-old-stacks-minio-root-password-0123"})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    rendered = json.loads(result.stdout)
    services, configs = rendered["services"], rendered.get("configs", {})
    settings = Settings.load(generated_env.parent)

    def holders(secret) -> set[str]:
        """The services whose definition holds `secret`, or a config (top-level in compose) they mount."""
        value = secret.get_secret_value()

        def holds(service: dict) -> bool:
            mounted = [configs[config["source"]] for config in service.get("configs", [])]
            return any(value in json.dumps(part) for part in (service, *mounted))

        return {name for name, service in services.items() if holds(service)}

    assert holders(settings.postgres_password) == {"preflight", "postgres", "database-bootstrap"}
    # SeaweedFS takes the admin's key from its identities config, nothing else of it in its environment
    assert holders(settings.s3_admin_secret_key) == {
        "preflight",
        "seaweedfs",
        "storage-bootstrap",
        "minio-move",
        "mlstack-exporter",  # lists the bucket for its size
    }
    assert {config["source"] for config in services["seaweedfs"]["configs"]} == {"seaweedfs-identities"}
    assert not any(service.get("configs") for name, service in services.items() if name != "seaweedfs")
    assert holders(settings.minio_root_password) == {"minio", "minio-move"}
    # the server's own key: the store that knows it, the step that checks it, the server; not the move
    assert holders(settings.mlflow_s3_secret_key) == {"preflight", "seaweedfs", "storage-bootstrap", "mlflow"}
    assert holders(settings.mlflow_db_password) == {"preflight", "database-bootstrap", "migrate", "mlflow"}
    assert holders(settings.mlflow_auth_admin_password) == {"preflight", "mlflow"}
    # monitoring: the read-only role's password to the step that makes it and the two exporters
    monitor = {"preflight", "database-bootstrap", "postgres-exporter", "mlstack-exporter"}
    assert holders(settings.postgres_monitor_password) == monitor
    assert holders(settings.grafana_admin_password) == {"preflight", "grafana"}
    assert services["migrate"]["depends_on"]["database-bootstrap"]["condition"] == "service_completed_successfully"
    assert (
        services["mlflow"]["environment"]["PGPASSWORD"]
        == services["database-bootstrap"]["environment"]["MLFLOW_DB_PASSWORD"]
    )


def render(compose_cli, env_file: Path, *profiles: str) -> dict:
    """The whole compose file (services, configs, ...) as compose renders it from `env_file`."""
    options = [option for profile in profiles for option in ("--profile", profile)]
    result = run_compose(compose_cli, COMPOSE_FILE, env_file, *options, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"S3_ADMIN_ACCESS_KEY": "team-admin", "MLFLOW_S3_ACCESS_KEY": "team-server", "MLFLOW_ARTIFACT_BUCKET": "team"},
    ],
    ids=["defaults", "changed-in-env"],
)
def test_seaweedfs_identities_are_the_native_runtimes(compose_cli, generated_env, changes):
    """One definition of SeaweedFS's identities (mlstack.bootstrap.storage.seaweedfs_identities), two
    renderings: the compose config from .env, and the file the native runtime writes."""
    update_env(generated_env, changes)
    rendered = render(compose_cli, generated_env)
    settings = Settings.load(generated_env.parent)

    identities = json.loads(rendered["configs"]["seaweedfs-identities"]["content"])
    assert identities == seaweedfs_identities(settings) == json.loads(identities_json(settings))
    # .env's keys (not empty ones both renderings could agree on)
    assert {identity["name"]: identity["credentials"] for identity in identities["identities"]} == {
        "admin": [
            {"accessKey": settings.s3_admin_access_key, "secretKey": settings.s3_admin_secret_key.get_secret_value()}
        ],
        "mlflow-server": [
            {"accessKey": settings.mlflow_s3_access_key, "secretKey": settings.mlflow_s3_secret_key.get_secret_value()}
        ],
    }
    assert all(
        len(key.get_secret_value()) >= 32 for key in (settings.s3_admin_secret_key, settings.mlflow_s3_secret_key)
    )
    # SeaweedFS reads them where compose mounts them
    seaweedfs = rendered["services"]["seaweedfs"]
    [mounted] = seaweedfs["configs"]
    assert mounted["source"] == "seaweedfs-identities"
    assert f"-s3.config={mounted['target']}" in seaweedfs["command"]


def test_minio_runs_only_in_the_move_profile_and_publishes_no_port(compose, compose_cli, generated_env):
    assert {name for name, service in compose["services"].items() if service.get("profiles")} == {
        *MINIO_MOVE,
        "tls-proxy",
        *(service.name for service in MLFLOW_STACK.services if service.profile in ("monitoring", "dashboards")),
    }
    for name in MINIO_MOVE:
        assert compose["services"][name]["profiles"] == ["minio-move"], name

    default = render(compose_cli, generated_env)["services"]
    assert not MINIO_MOVE & default.keys()
    moving = render(compose_cli, generated_env, "minio-move")["services"]
    assert moving.keys() == default.keys() | MINIO_MOVE
    # the move reaches MinIO inside the stack's network only, and MinIO keeps its old volume
    assert "ports" not in moving["minio"] and "ports" not in moving["minio-move"]
    assert [volume["source"] for volume in moving["minio"]["volumes"]] == ["minio-data"]
    published = {port["published"] for service in moving.values() for port in service.get("ports", [])}
    assert published == {"5432", "8333", "5000"}


def launched(environment: dict[str, str], command: list[str]) -> tuple[list[str], dict[str, str], str | None]:
    """What the server launcher would run, with which environment, writing which auth configuration."""
    return prepare(command, {key: str(value) for key, value in environment.items()})


def test_the_image_and_the_native_runtime_start_the_server_through_the_same_launcher(compose_cli, generated_env):
    update_env(generated_env, {"MLFLOW_PUBLIC_HOSTS": "mlflow.example.com,10.0.0.7"})
    result = run_compose(compose_cli, COMPOSE_FILE, generated_env, "config", "--format", "json")
    service = json.loads(result.stdout)["services"]["mlflow"]
    image_command, image_env, image_config = launched(service["environment"], service["command"])
    settings = Settings.load(generated_env.parent)
    native = mlflow_server_command(settings)
    launcher = native.index("mlstack_mlflow_store.launch")
    native_command, native_env, native_config = launched(mlflow_server_env(settings), native[launcher + 1 :])

    dockerfile = (PROJECT_DIR / "services" / "mlflow-server" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "mlstack_mlflow_store.launch"]' in dockerfile
    assert native[launcher - 2 : launcher + 1] == [sys.executable, "-m", "mlstack_mlflow_store.launch"]
    for command in (image_command, native_command):
        assert command[1:4] == ["-m", "mlflow", "server"] and command[-2:] == ["--app-name", "basic-auth"]
    for env in (image_env, native_env):
        assert env["MLFLOW_SERVER_ALLOWED_HOSTS"].endswith(
            ",mlflow.example.com,mlflow.example.com:*,10.0.0.7,10.0.0.7:*"
        )
    # the same configuration, each naming its own way to the database
    uri = settings.backend_store_uri(host="postgres", port=5432, with_password=False, database="mlflow_auth")
    assert image_config == auth_config(uri, "READ", 30)
    assert native_config == auth_config(
        image_env["MLFLOW_AUTH_DATABASE_URI"].replace("postgres:5432", f"127.0.0.1:{settings.postgres_port}"),
        "READ",
        30,
    )

    off_command, _, off_config = launched({**service["environment"], "MLFLOW_AUTH": "false"}, service["command"])
    assert "--app-name" not in off_command and off_config is None


def run_launcher(tmp_path, environment: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **environment}
    return subprocess.run(
        [sys.executable, "-m", "mlstack_mlflow_store.launch", *command], env=env, capture_output=True, text=True
    )


def test_the_launcher_refuses_a_placeholder_secret(tmp_path):
    refused = run_launcher(tmp_path, {"MLFLOW_AUTH_ADMIN_PASSWORD": "__generate__"}, "mlflow", "server")
    assert refused.returncode == 64 and "MLFLOW_AUTH_ADMIN_PASSWORD holds a placeholder secret" in refused.stderr


def test_the_launcher_writes_the_auth_configuration_private_then_runs_mlflow(tmp_path):
    started = run_launcher(
        tmp_path, {"MLFLOW_AUTH_DATABASE_URI": "postgresql+psycopg://u@h/db"}, "mlflow", "server", "--help"
    )
    assert started.returncode == 0 and "--app-name" in started.stdout, started.stderr
    config = tmp_path / "basic_auth.ini"
    assert config.stat().st_mode & 0o777 == 0o600
    assert "database_uri = postgresql+psycopg://u@h/db" in config.read_text()


def test_compose_seaweedfs_takes_the_native_runtimes_volume_limits(compose):
    """The same room for every bucket in both runtimes (mlstack.runtime.native.seaweedfs.VOLUME_LIMITS)."""
    from mlstack.runtime.native.seaweedfs import VOLUME_LIMITS

    command = compose["services"]["seaweedfs"]["command"]
    assert set(VOLUME_LIMITS) <= set(command)

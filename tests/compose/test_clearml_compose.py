"""Static checks of infra/clearml/compose.yaml, then validation with the real compose CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from mlstack.settings import CLEARML_SECRET_FIELDS, SECRET_FIELDS
from tests.compose.conftest import run_compose

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "infra" / "clearml" / "compose.yaml"
BIND_DEFAULT = "${MLSTACK_BIND_ADDRESS:-127.0.0.1}:"
#: Values upstream's secure.conf ships publicly (clearml-server v2.3.0); none may appear in our stack.
UPSTREAM_PUBLIC_SECRETS = (
    "V8gcW3EneNDcNfO7G_TSUsWe7uLozyacc9_I33o7bxUo8rCN31VLRg",
    "Rq8FW84sSqVgq7WvBB_4EzNl9y8z8IGiDXX3C345_a5AZfcwZcwCIA",
    "62T8CP7HGBC6647XF9314C2VY67RJO",
    "GSQWPEKSKNKF354LC9V6BHXKTYFD5I",
    "EYVQ385RW7Y2QQUH88CZ7DWIQ1WUHP",
    "EGRTCO8JMSIGI6S39GTP43NFWXDQOW",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_every_service_has_a_healthcheck(compose):
    missing = [name for name, service in compose["services"].items() if "test" not in service.get("healthcheck", {})]
    assert not missing, f"services without a healthcheck: {missing}"


def test_healthcheck_timings_come_from_the_shared_anchor(compose):
    shared = compose["x-healthcheck"]
    for name, service in compose["services"].items():
        timings = {key: service["healthcheck"][key] for key in shared}
        assert timings == shared, f"{name} overrides the shared healthcheck timings"


def test_every_image_is_pinned_to_a_version_tag(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} floats on latest"


def test_server_images_match_one_upstream_release(compose):
    server_images = {s["image"] for s in compose["services"].values() if s["image"].startswith("clearml/server")}
    assert server_images == {"clearml/server:2.3.0"}
    images = {s["image"] for s in compose["services"].values()}
    assert {"mongo:7.0.22", "redis:7.4.1", "elasticsearch:8.17.0"} <= images


def test_published_ports_bind_to_loopback_by_default(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith(BIND_DEFAULT), f"{name}: port {port!r} does not bind to 127.0.0.1 by default"


def test_databases_publish_no_port(compose):
    for name in ("mongo", "redis", "elasticsearch"):
        assert "ports" not in compose["services"][name], f"{name} must stay on the internal network"


def test_depends_on_waits_for_health(compose):
    services = compose["services"]
    assert services["fileserver"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for dependency in ("mongo", "redis", "elasticsearch", "fileserver"):
        assert services["apiserver"]["depends_on"][dependency]["condition"] == "service_healthy"
    assert services["webserver"]["depends_on"]["apiserver"]["condition"] == "service_healthy"
    assert services["agent-services"]["depends_on"]["apiserver"]["condition"] == "service_healthy"


def test_agent_runs_only_under_the_agent_profile(compose):
    assert compose["services"]["agent-services"]["profiles"] == ["agent"]
    others = [name for name, s in compose["services"].items() if name != "agent-services" and "profiles" in s]
    assert not others


def test_data_lives_in_named_volumes(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            assert source in compose["volumes"], f"{name}: {volume!r} is not a named volume"


def test_every_upstream_default_secret_is_required_from_env(compose):
    environment = compose["services"]["apiserver"]["environment"]
    required = [
        "secure__http__session_secret__apiserver",
        "secure__auth__token_secret",
        *(
            f"secure__credentials__{user}__{part}"
            for user in ("apiserver", "webserver", "fileserver", "tests", "services_agent")
            for part in ("user_key", "user_secret")
        ),
    ]
    for suffix in required:
        value = environment[f"CLEARML__{suffix}"]
        assert ":?" in value, f"CLEARML__{suffix} must come from .env with ${{VAR:?message}}, got {value!r}"
    assert environment["CLEARML__apiserver__auth__fixed_users__enabled"] == "true"
    assert "${CLEARML_FIXED_USER_PASSWORD:?" in environment["CLEARML__apiserver__auth__fixed_users__users"]


def test_no_upstream_public_secret_appears_in_the_stack():
    text = COMPOSE_FILE.read_text(encoding="utf-8") + (PROJECT_DIR / ".env.example").read_text(encoding="utf-8")
    leaked = [value for value in UPSTREAM_PUBLIC_SECRETS if value in text]
    assert not leaked


def test_every_clearml_secret_is_generated_by_init():
    example = (PROJECT_DIR / ".env.example").read_text(encoding="utf-8")
    for name in CLEARML_SECRET_FIELDS:
        assert name in SECRET_FIELDS
        assert f"{name.upper()}=__generate__" in example, f"{name.upper()} has no __generate__ placeholder"


def test_elasticsearch_heap_is_explicit(compose):
    assert compose["services"]["elasticsearch"]["environment"]["ES_JAVA_OPTS"] == (
        "-Xms${CLEARML_ES_HEAP:-1g} -Xmx${CLEARML_ES_HEAP:-1g}"
    )


# --- the real compose CLI -----------------------------------------------------------------


def run_clearml_compose(cli: list[str], env_file: Path, *args: str) -> subprocess.CompletedProcess:
    return run_compose(cli, COMPOSE_FILE, env_file, "--profile", "agent", *args)


def test_compose_cli_accepts_the_stack_with_generated_env(compose_cli, generated_env):
    result = run_clearml_compose(compose_cli, generated_env, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_agent_gets_the_same_keys_the_apiserver_seeds(compose_cli, generated_env):
    result = run_clearml_compose(compose_cli, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    seeded = services["apiserver"]["environment"]
    agent = services["agent-services"]["environment"]
    assert seeded["CLEARML__secure__credentials__services_agent__user_key"] == f'"{agent["CLEARML_API_ACCESS_KEY"]}"'
    assert seeded["CLEARML__secure__credentials__services_agent__user_secret"] == f'"{agent["CLEARML_API_SECRET_KEY"]}"'
    assert agent["CLEARML_HOST_IP"] == "127.0.0.1"
    published = {port["published"] for s in services.values() for port in s.get("ports", [])}
    assert published == {"8008", "8080", "8081"}
    assert {port["host_ip"] for s in services.values() for port in s.get("ports", [])} == {"127.0.0.1"}


def test_compose_cli_refuses_a_missing_secret(compose_cli, generated_env):
    lines = generated_env.read_text(encoding="utf-8").splitlines()
    generated_env.write_text("\n".join(line for line in lines if not line.startswith("CLEARML_TOKEN_SECRET=")))
    result = run_clearml_compose(compose_cli, generated_env, "config", "--quiet")
    assert result.returncode != 0
    assert "CLEARML_TOKEN_SECRET is not set" in result.stderr

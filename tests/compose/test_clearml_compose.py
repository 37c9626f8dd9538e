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


#: What each service needs answering before it can start, read from clearml-server v2.3.0:
#: the apiserver connects to mongo, redis and elasticsearch at start (apiserver/server_init); the
#: fileserver logs in to the apiserver at import (fileserver/auth.py: AuthHandler opens an apiserver
#: session) and caches token checks in redis; async_delete deletes through the fileserver with the
#: apiserver's data; the webserver's nginx proxies the API and the fileserver and resolves both names
#: when it starts (it exits on one it cannot resolve); the agent registers with the apiserver and
#: uploads to the fileserver.
NEEDS_AT_START = {
    "apiserver": {"mongo", "redis", "elasticsearch"},
    "fileserver": {"redis", "apiserver"},
    "async_delete": {"apiserver", "fileserver"},
    "webserver": {"apiserver", "fileserver"},
    "agent-services": {"apiserver", "fileserver"},
}


def test_each_service_waits_for_the_healthy_services_it_needs_at_start(compose):
    services = compose["services"]
    for name, needs in NEEDS_AT_START.items():
        depends = services[name].get("depends_on", {})
        assert set(depends) == needs, f"{name} depends on {sorted(depends)}, needs {sorted(needs)}"
        assert {entry["condition"] for entry in depends.values()} == {"service_healthy"}, name


def test_start_order_has_no_cycle(compose):
    """A cycle in depends_on (apiserver waiting for a fileserver that waits for the apiserver) never starts."""
    graph = {name: set(service.get("depends_on", {})) for name, service in compose["services"].items()}
    started: list[str] = []
    while graph:
        ready = sorted(name for name, needs in graph.items() if needs <= set(started))
        assert ready, f"these services wait for each other and never start: {sorted(graph)}"
        started.extend(ready)
        for name in ready:
            del graph[name]
    assert started.index("apiserver") < started.index("fileserver") < started.index("webserver")


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


def test_files_uploaded_by_the_agent_get_urls_the_host_and_browser_can_open(compose_cli, generated_env):
    from mlstack.envfile import update_env
    from mlstack.settings import Settings

    update_env(
        generated_env, {"CLEARML_FILES_PORT": "18081", "CLEARML_API_PORT": "18008", "CLEARML_HOST_IP": "10.1.2.3"}
    )
    result = run_clearml_compose(compose_cli, generated_env, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    agent = json.loads(result.stdout)["services"]["agent-services"]
    settings = Settings.load(generated_env.parent)

    # the agent is a client of the published ports, exactly as the host's clients (clearml.conf) are
    assert agent["network_mode"] == "host"
    assert agent["environment"]["CLEARML_FILES_HOST"] == settings.clearml_files_url == "http://10.1.2.3:18081"
    assert agent["environment"]["CLEARML_API_HOST"] == settings.clearml_api_url
    assert agent["environment"]["CLEARML_WEB_HOST"] == settings.clearml_web_url
    service_names = set(json.loads(result.stdout)["services"])
    for value in agent["environment"].values():
        assert not any(f"//{name}:" in value for name in service_names), value

"""A ClearML server this project does not run (CLEARML_API_HOST names it): `status` and `doctor` check
it against a stand-in apiserver (reachable, version, credentials, queue), `up` and `down` say there is
nothing to start or stop, and no command that acts on the stack's own services touches it."""

from __future__ import annotations

import pytest
from clearml_helpers import free_port
from fake_apiserver import SDK_KEY, SDK_SECRET, FakeApiServer
from rich.console import Console
from typer.testing import CliRunner

from mlstack import cli
from mlstack.errors import RuntimeUnavailableError
from mlstack.runtime import select_runtime
from mlstack.settings import Settings

STATUS, DOCTOR = ["status", "--stack", "clearml"], ["doctor", "--stack", "clearml"]


@pytest.fixture()
def apiserver():
    server = FakeApiServer("someone-elses-admin", "not-ours-not-ours-not-ours")
    server.credentials[SDK_KEY] = SDK_SECRET
    server.queues["default"] = "queue-id-1"
    yield server
    server.close()


@pytest.fixture()
def elsewhere(tmp_path, apiserver, monkeypatch):
    """A project whose .env points at the stand-in apiserver as a team's server, with its credentials."""
    values = {
        "CLEARML_API_HOST": apiserver.url,
        "CLEARML_WEB_HOST": "https://app.team.example",
        "CLEARML_FILES_HOST": "https://files.team.example",
        "CLEARML_API_ACCESS_KEY": SDK_KEY,
        "CLEARML_API_SECRET_KEY": SDK_SECRET,
    }
    write_env(tmp_path, values)
    monkeypatch.setenv("MLSTACK_PROJECT_DIR", str(tmp_path))
    for name in ("CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST", "CLEARML_DEFAULT_QUEUE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLEARML_API_ACCESS_KEY", raising=False)
    monkeypatch.delenv("CLEARML_API_SECRET_KEY", raising=False)
    return values


def write_env(folder, values: dict[str, str]) -> None:
    (folder / ".env").write_text("".join(f"{name}={value}\n" for name, value in values.items()))


def invoke(args: list[str]):
    result = CliRunner().invoke(cli.app, args, env={"COLUMNS": "250"})
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("command", [STATUS, DOCTOR], ids=["status", "doctor"])
def test_a_healthy_server_elsewhere_passes_with_its_version(elsewhere, apiserver, command):
    result = invoke(command)
    assert result.exit_code == 0, result.output
    assert f"✓ {'clearml server ' if command == DOCTOR else ''}reachable: {apiserver.url} answers" in result.output
    assert "logs in; ClearML server 2.3.0 (API 2.31)" in result.output
    assert "queue 'default': present" in result.output
    assert "✗" not in result.output
    assert SDK_SECRET not in result.output and SDK_KEY not in result.output, "the key is masked, the secret unsaid"


@pytest.mark.parametrize(("command", "failed"), [(STATUS, 3), (DOCTOR, 1)], ids=["status", "doctor"])
def test_wrong_credentials_fail_naming_the_credentials(elsewhere, tmp_path, command, failed):
    write_env(tmp_path, {**elsewhere, "CLEARML_API_SECRET_KEY": "not-the-secret-the-server-made"})
    result = invoke(command)
    assert result.exit_code == failed, result.output
    assert "✗ " in result.output and "credentials: key SDKK…(22 chars) does not log in" in result.output
    assert "401 failed to locate provided credentials" in result.output
    assert "Create new credentials" in result.output, "the fix: where such credentials are made"
    assert "not-the-secret-the-server-made" not in result.output


@pytest.mark.parametrize(("command", "failed"), [(STATUS, 3), (DOCTOR, 1)], ids=["status", "doctor"])
def test_a_missing_queue_fails_naming_the_queue(elsewhere, tmp_path, command, failed):
    write_env(tmp_path, {**elsewhere, "CLEARML_DEFAULT_QUEUE": "gpu"})
    result = invoke(command)
    assert result.exit_code == failed, result.output
    assert "queue 'gpu': the server has no queue named 'gpu' (CLEARML_DEFAULT_QUEUE)" in result.output
    assert "mlstack bootstrap --stack clearml" in result.output
    assert "logs in; ClearML server 2.3.0" in result.output, "what passed is said too"


@pytest.mark.parametrize(("command", "failed"), [(STATUS, 3), (DOCTOR, 1)], ids=["status", "doctor"])
def test_an_unreachable_server_fails_naming_its_url(elsewhere, tmp_path, command, failed):
    nobody = f"http://127.0.0.1:{free_port()}"
    write_env(tmp_path, {**elsewhere, "CLEARML_API_HOST": nobody})
    result = invoke(command)
    assert result.exit_code == failed, result.output
    assert f"reachable: nothing answers at {nobody} (ConnectionError)" in result.output
    assert "credentials" not in result.output, "what needs the server is not claimed either way"


def test_urls_that_are_not_all_set_are_named(elsewhere, tmp_path):
    write_env(tmp_path, {k: v for k, v in elsewhere.items() if k != "CLEARML_FILES_HOST"})
    result = invoke(STATUS)
    assert result.exit_code == 3, result.output
    assert "✗ URLs: CLEARML_FILES_HOST not set" in result.output


@pytest.mark.parametrize("command", ["up", "down"])
def test_up_and_down_say_there_is_nothing_to_start_or_stop(elsewhere, apiserver, tmp_path, command):
    env_before = (tmp_path / ".env").read_text()
    result = invoke([command, "--stack", "clearml"])
    assert result.exit_code == 0, result.output
    assert f"the ClearML server at {apiserver.url} (CLEARML_API_HOST) is not run by this project" in result.output
    assert "nothing of it runs here to start, stop or back up" in result.output
    assert (tmp_path / ".env").read_text() == env_before, "nothing was generated for a stack that is not here"
    assert apiserver.calls == []


def test_no_runtime_is_chosen_for_a_server_elsewhere(elsewhere, tmp_path):
    """backup, restore and upgrade act through the runtime: they refuse rather than reach the stack's own."""
    with pytest.raises(RuntimeUnavailableError, match="is not run by this project"):
        select_runtime(Settings.load(tmp_path), Console(), "docker", "clearml")


@pytest.mark.parametrize(
    ("api_host", "external"),
    [
        (None, False),
        ("http://127.0.0.1:8008", False),  # what `mlstack bootstrap` writes for the stack's own server
        ("http://localhost:8008/", False),
        ("http://127.0.0.1:18008", True),
        ("https://api.clear.ml", True),
    ],
)
def test_only_another_server_than_the_stacks_own_is_elsewhere(tmp_path, api_host, external):
    settings = Settings(MLSTACK_PROJECT_DIR=tmp_path, _env_file=None, CLEARML_API_HOST=api_host)
    assert settings.clearml_server_is_external is external
    assert settings.clearml_api_url == (api_host.rstrip("/") if external else "http://127.0.0.1:8008")

"""ClearML bootstrap steps against a stand-in apiserver: effects, then a second run changes nothing."""

from __future__ import annotations

import stat
from urllib.parse import urlparse

import pytest
from clearml.utilities.pyhocon import ConfigFactory
from fake_apiserver import FakeApiServer

from mlstack.bootstrap.clearml import (
    ClearMLAuthError,
    clearml_conf_path,
    clearml_steps,
    ensure_client_credentials,
    ensure_default_queue,
    render_clearml_conf,
)
from mlstack.bootstrap.steps import Outcome, run_steps
from mlstack.envfile import read_env
from mlstack.settings import Settings

PASSWORD = "Fixed0user0password0for0tests000"


@pytest.fixture()
def apiserver():
    server = FakeApiServer("mlstack", PASSWORD)
    yield server
    server.close()


@pytest.fixture()
def checkout(tmp_path, apiserver):
    port = urlparse(apiserver.url).port
    (tmp_path / ".env").write_text(f"CLEARML_API_PORT={port}\nCLEARML_FIXED_USER_PASSWORD={PASSWORD}\n")
    return tmp_path


def load(checkout) -> Settings:
    """Settings as `mlstack bootstrap` sees them: read from the checkout's .env."""
    return Settings(MLSTACK_PROJECT_DIR=checkout, MLSTACK_STATE_DIR=checkout / "state", _env_file=checkout / ".env")


def test_first_run_creates_credentials_env_and_private_conf(checkout, apiserver):
    settings = load(checkout)
    result = ensure_client_credentials(settings)
    assert result.outcome is Outcome.CREATED
    assert len(apiserver.credentials) == 1
    ((key, secret),) = apiserver.credentials.items()
    env = read_env(checkout / ".env")
    assert (env["CLEARML_API_ACCESS_KEY"], env["CLEARML_API_SECRET_KEY"]) == (key, secret)
    assert env["CLEARML_API_HOST"] == apiserver.url
    conf = clearml_conf_path(settings)
    assert env["CLEARML_CONFIG_FILE"] == str(conf)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    text = conf.read_text()
    assert f'access_key: "{key}"' in text and f'secret_key: "{secret}"' in text
    assert f'api_server: "{apiserver.url}"' in text


def test_second_run_reuses_working_credentials(checkout, apiserver):
    ensure_client_credentials(load(checkout))
    env_before = (checkout / ".env").read_text()
    result = ensure_client_credentials(load(checkout))
    assert result.outcome is Outcome.PRESENT
    assert len(apiserver.credentials) == 1
    assert (checkout / ".env").read_text() == env_before


def test_conf_sends_model_weights_to_the_fileserver_and_reports_without_forking(checkout):
    settings = load(checkout)
    conf = ConfigFactory.parse_string(render_clearml_conf(settings, "KEY", "SECRET"))  # as the SDK reads it
    assert conf.get("sdk.development.default_output_uri") == settings.clearml_files_url
    assert conf.get("api.files_server") == settings.clearml_files_url
    assert conf.get("sdk.development.report_use_subprocess") is False


def test_conf_sends_model_weights_to_a_configured_destination(checkout):
    with open(checkout / ".env", "a") as env:
        env.write("CLEARML_DEFAULT_OUTPUT_URI=s3://127.0.0.1:9000/clearml-models\n")
    conf = ConfigFactory.parse_string(render_clearml_conf(load(checkout), "KEY", "SECRET"))
    assert conf.get("sdk.development.default_output_uri") == "s3://127.0.0.1:9000/clearml-models"


def test_stale_credentials_are_replaced(checkout, apiserver):
    ensure_client_credentials(load(checkout))
    apiserver.credentials.clear()  # e.g. the server's data was wiped
    result = ensure_client_credentials(load(checkout))
    assert result.outcome is Outcome.CREATED
    ((key, _),) = apiserver.credentials.items()
    assert read_env(checkout / ".env")["CLEARML_API_ACCESS_KEY"] == key


def test_wrong_fixed_user_password_names_the_variable_and_fix(checkout):
    with open(checkout / ".env", "a") as env:
        env.write("CLEARML_FIXED_USER_PASSWORD=not-the-password-of-the-server\n")
    with pytest.raises(ClearMLAuthError, match="CLEARML_FIXED_USER_PASSWORD in .* must match"):
        ensure_client_credentials(load(checkout))


def test_default_queue_is_created_once(checkout, apiserver):
    assert ensure_default_queue(load(checkout)).outcome is Outcome.CREATED
    assert ensure_default_queue(load(checkout)).outcome is Outcome.PRESENT
    assert list(apiserver.queues) == ["default"]


def test_steps_run_in_order_and_report(checkout):
    reported = []
    results = run_steps(clearml_steps(), load(checkout), reported.append)
    assert [r.step for r in results] == ["clearml client credentials", "clearml default queue"]
    assert reported == results

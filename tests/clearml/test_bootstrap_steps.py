"""ClearML bootstrap steps against a stand-in apiserver: effects, then a second run changes nothing."""

from __future__ import annotations

import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from clearml.utilities.pyhocon import ConfigFactory
from fake_apiserver import SDK_KEY, SDK_SECRET, ApiError, FakeApiServer

from mlstack.bootstrap.clearml import (
    SHOWN_CHARACTERS,
    ClearMLApi,
    ClearMLApiError,
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
from tests.conftest import run_mlstack

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


def test_a_queue_name_with_regex_characters_is_found_on_the_second_run(checkout, apiserver):
    """The server matches names as regexes: `gpu+cpu` unescaped would never find itself (a new queue each run)."""
    with open(checkout / ".env", "a") as env:
        env.write("CLEARML_DEFAULT_QUEUE=gpu+cpu\n")
    assert ensure_default_queue(load(checkout)).outcome is Outcome.CREATED
    assert ensure_default_queue(load(checkout)).outcome is Outcome.PRESENT
    assert list(apiserver.queues) == ["gpu+cpu"]


def test_a_server_error_is_one_line_with_the_call_the_status_and_the_message(checkout, apiserver):
    apiserver.fail_once["queues.create"] = ApiError(400, "Invalid queue name", subcode=12)
    with pytest.raises(ClearMLApiError) as error:
        ensure_default_queue(load(checkout))
    assert str(error.value) == f"clearml: queues.create at {apiserver.url} failed: 400 Invalid queue name (subcode 12)"


def test_bootstrap_prints_a_server_error_as_that_one_line(checkout, apiserver):
    """As a user runs it: the failure is that one line (after the steps that passed), not the server's JSON."""
    apiserver.fail_once["queues.create"] = ApiError(400, "Invalid queue name", subcode=12)
    result = run_mlstack(checkout, "bootstrap", "--stack", "clearml")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last == f"error: clearml: queues.create at {apiserver.url} failed: 400 Invalid queue name (subcode 12)"
    assert "{" not in output and "Traceback" not in output


@pytest.fixture()
def proxy():
    """A front that answers every call with HTML, as a proxy does when the apiserver behind it is down."""
    page = "<html><head><title>502 Bad Gateway</title></head>" + "<!-- padding -->" * 20 + "\n<body>nginx</body></html>"

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = page.encode()
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", page
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_clearmls_json_shows_its_first_line_cut_where_it_says(proxy):
    url, page = proxy
    with pytest.raises(ClearMLApiError) as error:
        ClearMLApi(url).login("key", "secret")
    shown = page.splitlines()[0][:SHOWN_CHARACTERS]
    expected = f"clearml: auth.login at {url} failed: 502 {shown}… (first line, cut at {SHOWN_CHARACTERS} characters)"
    assert str(error.value) == expected
    assert "\n" not in str(error.value)


def test_on_a_server_elsewhere_bootstrap_uses_the_credentials_made_there(tmp_path, apiserver):
    """No fixed user of ours exists there: the stored key is checked, clearml.conf written, the queue
    created with that key."""
    apiserver.credentials[SDK_KEY] = SDK_SECRET
    (tmp_path / ".env").write_text(
        f"CLEARML_API_HOST={apiserver.url}\nCLEARML_WEB_HOST=https://app.team.example\n"
        f"CLEARML_FILES_HOST=https://files.team.example\nCLEARML_API_ACCESS_KEY={SDK_KEY}\n"
        f"CLEARML_API_SECRET_KEY={SDK_SECRET}\nCLEARML_DEFAULT_QUEUE=team-gpu\n"
    )
    results = run_steps(clearml_steps(), load(tmp_path), lambda result: None)
    assert [r.outcome for r in results] == [Outcome.UPDATED, Outcome.CREATED]  # clearml.conf written; queue made
    assert apiserver.credentials == {SDK_KEY: SDK_SECRET}, "no credentials made on someone else's server"
    assert list(apiserver.queues) == ["team-gpu"]
    conf = ConfigFactory.parse_file(str(clearml_conf_path(load(tmp_path))))
    assert (conf.get("api.api_server"), conf.get("api.files_server")) == (apiserver.url, "https://files.team.example")
    assert [r.outcome for r in run_steps(clearml_steps(), load(tmp_path), lambda result: None)] == [Outcome.PRESENT] * 2


def test_on_a_server_elsewhere_refused_credentials_say_where_to_make_them(tmp_path, apiserver):
    (tmp_path / ".env").write_text(
        f"CLEARML_API_HOST={apiserver.url}\nCLEARML_WEB_HOST=https://app.x\nCLEARML_FILES_HOST=https://files.x\n"
        "CLEARML_API_ACCESS_KEY=NOKEY0000\nCLEARML_API_SECRET_KEY=no-such-secret\n"
    )
    with pytest.raises(ClearMLAuthError, match="is not run by this project and refused CLEARML_API_ACCESS_KEY NOKE…"):
        ensure_client_credentials(load(tmp_path))
    with pytest.raises(ClearMLAuthError, match="Create new credentials") as refused:
        ensure_default_queue(load(tmp_path))
    assert "no-such-secret" not in str(refused.value)
    assert apiserver.credentials == {} and apiserver.queues == {}

"""`mlstack clearml download URL`: the fileserver asks for a login (a plain GET answers 401, as
upstream's with its auth on), and the command, run as a user runs it, downloads through the real SDK,
which sends the apiserver's token to the configured fileserver. The stand-in fileserver accepts only
tokens its apiserver issued."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
import requests
from fake_apiserver import SDK_KEY, SDK_SECRET, FakeApiServer, FakeFileServer

from tests.conftest import run_mlstack

ARTIFACT = "mlstack/train.0a1b2c/artifacts/model/model.joblib"


@pytest.fixture()
def servers():
    api = FakeApiServer("mlstack", "fixed-user-password-0000000000")
    api.credentials[SDK_KEY] = SDK_SECRET
    files = FakeFileServer(tokens=api.tokens)
    files.files[ARTIFACT] = b"model weights"
    yield api, files
    api.close()
    files.close()


@pytest.fixture()
def checkout(tmp_path, servers):
    """A project bootstrapped against the stand-ins: their ports and the client credentials in .env."""
    api, files = servers
    (tmp_path / ".env").write_text(
        f"CLEARML_API_PORT={urlparse(api.url).port}\nCLEARML_FILES_PORT={urlparse(files.url).port}\n"
        f"CLEARML_API_ACCESS_KEY={SDK_KEY}\nCLEARML_API_SECRET_KEY={SDK_SECRET}\n"
    )
    return tmp_path


def one_error_line(result) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.startswith("error: clearml download: ") and "Traceback" not in output, output
    return " ".join(output.split())


def test_a_plain_get_is_refused_and_the_command_downloads_with_the_projects_login(servers, checkout):
    _, files = servers
    url = f"{files.url}/{ARTIFACT}"
    assert requests.get(url, timeout=10).status_code == 401

    result = run_mlstack(checkout, "clearml", "download", url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (checkout / "model.joblib").read_bytes() == b"model weights"
    assert f"downloaded {url} to {checkout / 'model.joblib'} (13 bytes)" in " ".join(result.stdout.split())
    assert SDK_SECRET not in result.stdout


def test_to_names_the_file_or_its_folder_and_an_existing_file_is_kept(servers, checkout):
    _, files = servers
    url = f"{files.url}/{ARTIFACT}"
    assert run_mlstack(checkout, "clearml", "download", url, "--to", "models/ridge.joblib").returncode == 0
    assert (checkout / "models" / "ridge.joblib").read_bytes() == b"model weights"
    assert run_mlstack(checkout, "clearml", "download", url, "--to", "models").returncode == 0
    assert (checkout / "models" / "model.joblib").read_bytes() == b"model weights"

    (checkout / "models" / "model.joblib").write_bytes(b"mine")
    output = one_error_line(run_mlstack(checkout, "clearml", "download", url, "--to", "models"))
    assert f"{checkout / 'models' / 'model.joblib'} already exists" in output
    assert (checkout / "models" / "model.joblib").read_bytes() == b"mine"


def test_a_fileserver_that_does_not_take_the_login_is_one_line_naming_the_url(servers, checkout):
    _, files = servers
    files.tokens = set()  # e.g. a fileserver of another apiserver
    url = f"{files.url}/{ARTIFACT}"
    output = one_error_line(run_mlstack(checkout, "clearml", "download", url))
    assert f"{url} was refused (401): it did not accept this project's login" in output
    assert not (checkout / "model.joblib").exists()


def test_wrong_credentials_are_named(servers, checkout):
    _, files = servers
    with open(checkout / ".env", "a") as env:
        env.write("CLEARML_API_SECRET_KEY=not-the-secret\n")
    output = one_error_line(run_mlstack(checkout, "clearml", "download", f"{files.url}/{ARTIFACT}"))
    assert "refused this project's credentials (CLEARML_API_ACCESS_KEY SDKK…(22 chars))" in output
    assert "not-the-secret" not in output


def test_a_missing_file_is_one_line_naming_the_url_and_404(servers, checkout):
    _, files = servers
    url = f"{files.url}/mlstack/no-such-task/artifacts/model.joblib"
    output = one_error_line(run_mlstack(checkout, "clearml", "download", url))
    assert f"{url} is not on the server (404)" in output


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd", "ftp://files.example/model.joblib"])
def test_anything_but_an_http_or_s3_url_is_refused_naming_it(checkout, url):
    output = one_error_line(run_mlstack(checkout, "clearml", "download", url))
    assert f"{url!r} is not a URL it downloads" in output

"""docs/security.md "Open it to the team", run as written on a scratch stack: the settings in .env, `mlstack up`,
`mlstack user add`, then a team member's plain mlflow client on another machine (a process with
nothing of ours in its environment) reaching the server over HTTPS by this machine's address,
trusting the generated CA. Plain HTTP from outside is refused, and so is a name the server was
not told about."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psycopg
import pytest
import requests
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.errors import MissingToolError
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.runtime.native.tools import find_tools
from mlstack.settings import Settings
from tests.conftest import REQUIRED_RUNTIME, free_port, make_project, run_mlstack
from tests.stack import discard

pytestmark = pytest.mark.integration

ALICE_PASSWORD = "alice-password-0123456789"
ALICE = ("alice", ALICE_PASSWORD)
#: Small limits per route family, so a body past each is cheap to send.
BODY_LIMIT = 64 * 1024
GRAPHQL_LIMIT = 16 * 1024
ARTIFACT_LIMIT = 16 * 1024 * 1024  # past the others by more than "far past" below


def machine_address() -> str:
    """This machine's address on its network (the one a team member's machine would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # a documentation address: nothing is sent
        return probe.getsockname()[0]


@pytest.fixture(scope="module")
def team_stack():
    """The recipe's server side; yields (settings, address, the CA file handed to the team)."""
    address = machine_address()
    if address.startswith("127."):
        pytest.skip("this machine has no network address other than loopback")
    root = Path(tempfile.mkdtemp(prefix="mlstack-team-"))
    settings = make_project(root / "project")
    update_env(
        settings.env_file,
        {
            "MLFLOW_PUBLIC_HOSTS": address,
            "MLFLOW_TLS": "true",
            "MLFLOW_TLS_BIND_ADDRESS": "0.0.0.0",
            "MLFLOW_TLS_PORT": str(free_port()),
            "MLSTACK_MAX_REQUEST_BYTES": str(BODY_LIMIT),
            "MLSTACK_MAX_GRAPHQL_BYTES": str(GRAPHQL_LIMIT),
            "MLSTACK_MAX_ARTIFACT_BYTES": str(ARTIFACT_LIMIT),
        },
    )
    settings = Settings.load(settings.project_dir)
    try:
        find_tools(settings)
    except MissingToolError as missing:
        if REQUIRED_RUNTIME == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but the TLS front cannot run: {missing}")
        pytest.skip(str(missing))
    runtime = NativeRuntime(settings, Console(stderr=True))
    try:
        up = run_mlstack(settings.project_dir, "up", "--stack", "mlflow", "--runtime", "native")
        assert up.returncode == 0, up.stdout + up.stderr
        added = run_mlstack(
            settings.project_dir, "user", "add", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n"
        )
        assert added.returncode == 0, added.stdout + added.stderr
        handed_over = root / "alice" / "ca.pem"  # what alice gets: the CA certificate, never its key
        handed_over.parent.mkdir()
        shutil.copy(settings.state_path / "tls" / "ca.pem", handed_over)
        yield Settings.load(settings.project_dir), address, handed_over
    finally:
        discard(runtime)
        shutil.rmtree(root, ignore_errors=True)


ALICES_SCRIPT = textwrap.dedent(
    """
    import mlflow
    mlflow.set_experiment("team")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.5)
    print(run.info.run_id)
    """
)


def as_alice(url: str, ca: Path | None, home: Path) -> subprocess.CompletedProcess:
    """Alice's script with her environment only: the URL, her login, the CA she was given."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": ALICE_PASSWORD,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        **({"MLFLOW_TRACKING_SERVER_CERT_PATH": str(ca)} if ca else {}),
    }
    return subprocess.run(
        [sys.executable, "-c", ALICES_SCRIPT], env=env, capture_output=True, text=True, timeout=120, cwd=home
    )


def test_a_team_member_logs_a_run_over_https_trusting_the_generated_ca(team_stack, tmp_path):
    settings, address, ca = team_stack
    logged = as_alice(f"https://{address}:{settings.mlflow_tls_port}", ca, tmp_path)
    assert logged.returncode == 0, logged.stderr
    run_id = logged.stdout.strip().splitlines()[-1]
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        rows = connection.execute("SELECT key, value FROM metrics WHERE run_uuid = %s", (run_id,)).fetchall()
    assert rows == [("loss", 0.5)]


def test_without_the_ca_the_client_refuses_the_server(team_stack, tmp_path):
    settings, address, _ = team_stack
    refused = as_alice(f"https://{address}:{settings.mlflow_tls_port}", None, tmp_path)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr[-500:]


def test_plain_http_from_another_machine_is_refused(team_stack):
    settings, address, _ = team_stack
    with pytest.raises(requests.ConnectionError):  # the server itself listens on 127.0.0.1 only
        requests.get(f"http://{address}:{settings.mlflow_port}/health", timeout=5)
    on_tls_port = requests.get(f"http://{address}:{settings.mlflow_tls_port}/health", timeout=5)
    assert on_tls_port.status_code == 400 and "HTTPS" in on_tls_port.text


def test_a_name_the_server_was_not_told_about_is_refused(team_stack):
    settings, address, ca = team_stack
    url = f"https://{address}:{settings.mlflow_tls_port}/api/2.0/mlflow/experiments/search?max_results=1"
    login = ("alice", ALICE_PASSWORD)
    assert requests.get(url, auth=login, verify=ca, timeout=10).status_code == 200
    assert requests.get(url, auth=login, verify=ca, headers={"Host": "evil.example.com"}, timeout=10).status_code == 403


def test_status_shows_the_tls_front_and_the_ca_to_hand_out(team_stack):
    settings, address, _ = team_stack
    status = run_mlstack(settings.project_dir, "status", "--stack", "mlflow", "--runtime", "native")
    assert status.returncode == 0, status.stdout
    flat = status.stdout.replace("\n", "")
    assert "tls-proxy" in status.stdout and "ca.pem" in flat


#: Each route family's limit here: a path of the family, the variable, its value in the stack's .env.
ROUTE_FAMILIES = {
    "API": ("/api/2.0/mlflow/runs/search", "MLSTACK_MAX_REQUEST_BYTES", BODY_LIMIT),
    "GraphQL": ("/graphql", "MLSTACK_MAX_GRAPHQL_BYTES", GRAPHQL_LIMIT),
    "artifacts": ("/api/2.0/mlflow-artifacts/artifacts/0/big.bin", "MLSTACK_MAX_ARTIFACT_BYTES", ARTIFACT_LIMIT),
}


def chunks(size: int, piece: int = 256 * 1024):
    """A body of `size` bytes sent without a declared length (Transfer-Encoding: chunked)."""
    for start in range(0, size, piece):
        yield b"a" * min(piece, size - start)


@pytest.mark.parametrize("family", ROUTE_FAMILIES)
@pytest.mark.parametrize("past", [1, 8 * 1024 * 1024], ids=["just-past", "far-past"])
@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_past_its_limit_gets_413_naming_the_limit_through_the_front(team_stack, family, past, chunked):
    """Declared or chunked, just past the limit or megabytes past it, sent the way MLflow's client
    sends (requests: the whole body, then the answer): the sender reads which limit it crossed. The
    server reads and drops the rest of the body before answering, so the answer is not lost to a
    reset connection; the front itself cuts only bodies past the largest limit (the artifacts')."""
    settings, address, ca = team_stack
    path, variable, limit = ROUTE_FAMILIES[family]
    size = limit + past
    try:
        response = requests.request(
            "PUT" if family == "artifacts" else "POST",
            f"https://{address}:{settings.mlflow_tls_port}{path}",
            data=chunks(size) if chunked else b"a" * size,
            auth=("alice", ALICE_PASSWORD),
            verify=ca,
            headers={"Content-Type": "application/octet-stream" if family == "artifacts" else "application/json"},
            timeout=60,
        )
    except requests.ConnectionError:
        # the front's own cut: Caddy answers 413 and closes with megabytes unread (docs/security.md)
        assert family == "artifacts" and past > 256 * 1024
        return
    assert response.status_code == 413, (response.status_code, response.text)
    assert variable in response.json()["message"] and str(limit) in response.json()["message"]


def test_each_family_keeps_its_own_limit_at_the_front(team_stack):
    """An artifact past the API limit uploads (chunked, through the front) and reads back whole; an
    API request within its limit is answered."""
    settings, address, ca = team_stack
    front = f"https://{address}:{settings.mlflow_tls_port}"
    admin = (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
    upload = requests.put(
        f"{front}/api/2.0/mlflow-artifacts/artifacts/0/fits.bin",
        data=chunks(ARTIFACT_LIMIT - 1, piece=64 * 1024),
        auth=admin,
        verify=ca,
        timeout=60,
    )
    assert upload.status_code == 200, upload.text
    read_back = requests.get(f"{front}/api/2.0/mlflow-artifacts/artifacts/0/fits.bin", auth=admin, verify=ca)
    assert read_back.content == b"a" * (ARTIFACT_LIMIT - 1)
    fits = requests.post(
        f"{front}/api/2.0/mlflow/runs/search", json={"experiment_ids": ["0"]}, auth=("alice", ALICE_PASSWORD), verify=ca
    )
    assert fits.status_code == 200, fits.text


OTLP_SCRIPT = textwrap.dedent(
    """
    import base64, sys
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    url, experiment_id, login, ca = sys.argv[1:5]
    login = "Basic " + base64.b64encode(login.encode()).decode()
    headers = {"x-mlflow-experiment-id": experiment_id, "Authorization": login}
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers=headers, certificate_file=ca)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("otlp-probe").start_as_current_span("feature-pipeline") as parent:
        with provider.get_tracer("otlp-probe").start_as_current_span("load-data") as child:
            child.set_attribute("rows", 1000)
    print(format(parent.get_span_context().trace_id, "032x"))
    """
)


def send_spans(url: str, experiment_id: str, login: str, ca: Path, home: Path) -> str:
    """An OpenTelemetry SDK (any language's would do) exporting two spans over OTLP/HTTP: the trace id."""
    sent = subprocess.run(
        [sys.executable, "-c", OTLP_SCRIPT, url, experiment_id, login, str(ca)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert sent.returncode == 0, sent.stderr
    return sent.stdout.strip()


def test_an_opentelemetry_sdk_sends_traces_through_the_tls_front(team_stack, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    settings, address, ca = team_stack
    url = f"https://{address}:{settings.mlflow_tls_port}"
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "otlp-" + tmp_path.name}, auth=ALICE, verify=ca
    )
    experiment_id = created.json()["experiment_id"]

    trace_id = send_spans(url, experiment_id, ":".join(ALICE), ca, tmp_path)

    for name, value in [("USERNAME", "alice"), ("PASSWORD", ALICE_PASSWORD), ("SERVER_CERT_PATH", str(ca))]:
        monkeypatch.setenv(f"MLFLOW_TRACKING_{name}", value)
    client = MlflowClient(url)
    traces = client.search_traces(locations=[experiment_id])
    assert [trace.info.trace_id for trace in traces] == [f"tr-{trace_id}"]
    spans = {span.name: span for span in client.get_trace(traces[0].info.trace_id).data.spans}
    assert set(spans) == {"feature-pipeline", "load-data"}
    assert spans["load-data"].attributes["rows"] == 1000


def test_otlp_without_a_login_or_by_a_reader_is_refused(team_stack, tmp_path):
    settings, address, ca = team_stack
    url = f"https://{address}:{settings.mlflow_tls_port}"
    reader_login = ("otlp-reader", "reader-password-0123456789")
    added = run_mlstack(
        settings.project_dir, "user", "add", reader_login[0], "--read-only", "--password-stdin", stdin=reader_login[1]
    )
    assert added.returncode == 0, added.stderr
    created = requests.post(
        f"{url}/api/2.0/mlflow/experiments/create", json={"name": "otlp-" + tmp_path.name}, auth=ALICE, verify=ca
    )
    experiment_id = created.json()["experiment_id"]
    body = b"\x0a\x00"  # an ExportTraceServiceRequest with one empty ResourceSpans
    headers = {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": experiment_id}
    anonymous = requests.post(f"{url}/v1/traces", data=body, headers=headers, verify=ca, timeout=30)
    assert anonymous.status_code == 401
    reader = requests.post(f"{url}/v1/traces", data=body, headers=headers, auth=reader_login, verify=ca, timeout=30)
    assert reader.status_code == 403  # READ on alice's experiment (the default permission), not EDIT
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        stored = connection.execute("SELECT count(*) FROM trace_info WHERE experiment_id = %s", (int(experiment_id),))
        assert stored.fetchone() == (0,)

"""How the MLflow server runs: its gunicorn options and store come from .env; bad values are refused by name."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from mlstack.envfile import update_env
from mlstack.errors import ConfigError
from mlstack.runtime.native.ha_ports import MLFLOW_BLOCK
from mlstack.runtime.native.server import (
    mlflow_proxy_config,
    mlflow_replicas,
    mlflow_server_command,
    mlflow_server_env,
    require_store_plugin,
)
from mlstack.settings import Settings


def test_workers_threads_and_timeout_come_from_env(project):
    update_env(project.env_file, {"MLFLOW_WORKERS": "3", "MLFLOW_THREADS": "5", "MLFLOW_WORKER_TIMEOUT": "77"})
    command = mlflow_server_command(Settings.load(project.project_dir))

    assert command[command.index("--workers") + 1] == "3"
    options = command[command.index("--gunicorn-opts") + 1].split()
    assert options[options.index("--worker-class") + 1] == "gthread"
    assert options[options.index("--threads") + 1] == "5"
    assert options[options.index("--timeout") + 1] == "77"


@pytest.mark.parametrize(("name", "value"), [("MLFLOW_THREADS", "0"), ("MLFLOW_WORKERS", "two")])
def test_an_unusable_server_setting_is_refused_naming_it(project, name, value):
    update_env(project.env_file, {name: value})
    with pytest.raises(ConfigError) as raised:
        Settings.load(project.project_dir)
    assert f"{name}={value!r}" in str(raised.value)
    assert str(project.env_file) in str(raised.value)


def test_fast_store_is_on_by_default_and_off_when_env_says_so(project):
    assert mlflow_server_env(project)["MLSTACK_FAST_STORE"] == "true"
    update_env(project.env_file, {"MLSTACK_FAST_STORE": "false"})
    assert mlflow_server_env(Settings.load(project.project_dir))["MLSTACK_FAST_STORE"] == "false"


def test_server_start_is_refused_without_its_plugin_whatever_the_fast_store_switch(project, monkeypatch):
    """The plugin brings the request guard and the login check, which run with the fast store off too."""
    require_store_plugin(project)  # installed alongside mlstack (make venv)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    for fast_store in ("true", "false"):
        update_env(project.env_file, {"MLSTACK_FAST_STORE": fast_store})
        with pytest.raises(ConfigError) as raised:
            require_store_plugin(Settings.load(project.project_dir))
        assert "mlstack-mlflow-store plugin is not installed" in str(raised.value) and "make venv" in str(raised.value)


def test_each_ha_replica_listens_on_loopback_on_a_port_of_its_own_in_the_mlflow_block(project):
    update_env(project.env_file, {"MLSTACK_TOPOLOGY": "ha", "MLSTACK_HA_PORT_BASE": "21000"})
    settings = Settings.load(project.project_dir)
    replicas = mlflow_replicas(settings)

    first, size = MLFLOW_BLOCK
    assert [(r.name, r.port) for r in replicas] == [("mlflow-1", 21000 + first), ("mlflow-2", 21000 + first + 1)]
    assert len(replicas) <= size
    for replica in replicas:
        command = mlflow_server_command(settings, "127.0.0.1", replica.port)
        assert command[command.index("--host") + 1] == "127.0.0.1"
        assert command[command.index("--port") + 1] == str(replica.port)
    single = mlflow_server_command(settings)
    assert single[single.index("--port") + 1] == str(settings.mlflow_port)


def test_haproxy_spreads_over_the_replicas_on_mlflow_port_and_replays_only_what_cannot_double(project, tmp_path):
    update_env(project.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    settings = Settings.load(project.project_dir)
    config = mlflow_proxy_config(settings, tmp_path / "admin.sock")

    assert f"bind {settings.bind_address}:{settings.mlflow_port}\n" in config
    for replica in mlflow_replicas(settings):
        assert f"server {replica.name} 127.0.0.1:{replica.port} check port {replica.port}\n" in config
    assert "mode http" in config and "option redispatch 1" in config
    assert "retry-on conn-failure empty-response\n" in config
    assert "http-request disable-l7-retry unless replayable" in config
    assert "/runs/create" not in config and "/experiments/create" not in config
    assert f"stats socket {tmp_path / 'admin.sock'} mode 600 level admin" in config
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("HAProxy is not installed (MLSTACK_TOPOLOGY=ha's tools)")
    (tmp_path / "haproxy.cfg").write_text(config)
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

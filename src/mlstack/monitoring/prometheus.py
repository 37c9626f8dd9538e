"""Prometheus' and Alertmanager's configurations, made from the stack's definition and the settings for
either runtime: the same scrape jobs, rules and receiver; only the targets' addresses differ (native:
127.0.0.1 and each service's port from .env; compose: the service's name and its port inside the
network). The `monitoring-config` step writes them (compose: into its volume; native: the state folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlstack.envfile import write_private
from mlstack.settings import PACKAGED_CONF, Settings
from mlstack.stacks import Stack
from mlstack.stacks.mlflow import HAPROXY_IMAGE, METRICS_PORTS, mlflow_stack

#: The alert rules (docs/operations.md), shipped in the package.
ALERT_RULES = Path(str(PACKAGED_CONF / "prometheus" / "alerts.yml"))
PROMETHEUS_CONFIG, ALERTMANAGER_CONFIG, RULES_FILE = "prometheus.yml", "alertmanager.yml", "alerts.yml"
#: How long Prometheus keeps samples (its data lives under the state folder).
RETENTION = "30d"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    targets: tuple[str, ...]


def _members(stack: Stack, name: str) -> tuple[str, ...]:
    """The services behind `name`: an ha group's members (HAProxy waits for them), else `name` itself."""
    service = stack[name]
    return service.waits_for if service.image == HAPROXY_IMAGE else (name,)


def scrape_jobs(settings: Settings, runtime: Literal["native", "docker"]) -> tuple[ScrapeJob, ...]:
    """Every scrape job of the stack (jobs: docs/operations.md), its targets as `runtime` reaches them.
    Natively, no SeaweedFS job when MLSTACK_S3_ENDPOINT names another S3 (none runs then)."""
    # here, not at the top: the native runtime imports this module
    from mlstack.runtime.native.seaweedfs_cluster import cluster_nodes
    from mlstack.runtime.native.server import mlflow_metrics_targets

    stack, s = mlflow_stack(settings.topology), settings
    seaweedfs = [service.name for service in stack.services if service.name.startswith("seaweedfs-")]
    if runtime == "docker":
        port = METRICS_PORTS
        jobs = {
            "prometheus": [f"prometheus:{port['prometheus']}"],
            "alertmanager": [f"alertmanager:{port['alertmanager']}"],
            "mlflow": [f"{name}:{port['mlflow']}" for name in _members(stack, "mlflow")],
            "postgres": [f"postgres-exporter:{port['postgres-exporter']}"],
            "seaweedfs": [f"{name}:{port['seaweedfs']}" for name in seaweedfs or ["seaweedfs"]],
            "mlstack": [f"mlstack-exporter:{port['mlstack-exporter']}"],
        }
    else:
        nodes = cluster_nodes(s).nodes if s.topology == "ha" else ()
        jobs = {
            "prometheus": [f"127.0.0.1:{s.prometheus_port}"],
            "alertmanager": [f"127.0.0.1:{s.alertmanager_port}"],
            "mlflow": mlflow_metrics_targets(s),
            "postgres": [f"127.0.0.1:{s.postgres_exporter_port}"],
            "seaweedfs": [f"127.0.0.1:{node.metrics}" for node in nodes] or [f"127.0.0.1:{s.seaweedfs_metrics_port}"],
            "mlstack": [f"127.0.0.1:{s.mlstack_exporter_port}"],
        }
        if s.s3_endpoint:
            del jobs["seaweedfs"]
    return tuple(ScrapeJob(name, tuple(targets)) for name, targets in jobs.items())


def prometheus_config(settings: Settings, runtime: Literal["native", "docker"]) -> str:
    """prometheus.yml: every job scraped and the rules evaluated each MLSTACK_SCRAPE_INTERVAL, alerts to
    Alertmanager. JSON, which is YAML."""
    alertmanager = next(job for job in scrape_jobs(settings, runtime) if job.name == "alertmanager")
    config = {
        "global": {
            "scrape_interval": settings.mlstack_scrape_interval,
            "evaluation_interval": settings.mlstack_scrape_interval,
            "external_labels": {"stack": "mlflow", "topology": settings.topology},
        },
        "rule_files": [RULES_FILE],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": list(alertmanager.targets)}]}]},
        "scrape_configs": [
            {"job_name": job.name, "static_configs": [{"targets": list(job.targets)}]}
            for job in scrape_jobs(settings, runtime)
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def alertmanager_config(settings: Settings) -> str:
    """alertmanager.yml: alerts grouped by name and job, to MLSTACK_ALERT_WEBHOOK_URL (firing and
    resolved) when set, else held in Alertmanager's UI only."""
    url = settings.mlstack_alert_webhook_url.strip()
    webhook = {"name": "webhook", "webhook_configs": [{"url": url, "send_resolved": True}]}
    receiver = webhook if url else {"name": "none"}
    config = {
        "route": {
            "receiver": receiver["name"],
            "group_by": ["alertname", "job"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    }
    return json.dumps(config, indent=2) + "\n"


def write_monitoring_config(settings: Settings, folder: Path, runtime: Literal["native", "docker"]) -> bool:
    """Prometheus' and Alertmanager's configurations and the rules in `folder`; True when any of them
    changed. Natively 0600 each (the webhook's URL may hold a token); in compose 0644 inside their volume,
    which only the containers mounting it see, where Prometheus and Alertmanager read them as their
    images' own user."""
    wanted = {
        PROMETHEUS_CONFIG: prometheus_config(settings, runtime),
        ALERTMANAGER_CONFIG: alertmanager_config(settings),
        RULES_FILE: ALERT_RULES.read_text(),
    }
    changed = False
    for name, text in wanted.items():
        path = folder / name
        if not (path.is_file() and path.read_text() == text):
            write_private(path, text)
            if runtime == "docker":
                path.chmod(0o644)
            changed = True
    return changed

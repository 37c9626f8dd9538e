"""The Grafana dashboards (src/mlstack/conf/grafana) and mlstack.monitoring.dashboards.

Every panel query is checked by Prometheus' own engine, offline: each becomes a recording rule that
`promtool check rules` parses, and `promtool test rules` evaluates it over the series a native stack
with a workload exposes, requiring an answer (so a query that parses but finds nothing fails too)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from mlstack.monitoring.dashboards import PanelQuery, panel_queries, prometheus_graph_link
from tests.monitoring.promtool import run_promtool

GRAFANA = Path(__file__).resolve().parents[2] / "src/mlstack/conf/grafana"
#: Grafana 10.2 to 11.2 write this schema; both read it as it is.
SCHEMA_VERSION = 39
RUNS = {"RUNNING": 4, "FINISHED": 20, "FAILED": 1, "KILLED": 0, "SCHEDULED": 0}
CLEARML_TASKS = {"completed": 12, "in_progress": 1, "queued": 0}


def series(name: str, job: str, port: int, **labels: str) -> str:
    """A series as promtool writes it, from the target `job` at 127.0.0.1:`port`."""
    pairs = {"job": job, "instance": f"127.0.0.1:{port}", **labels}
    return name + "{" + ", ".join(f'{label}="{value}"' for label, value in pairs.items()) + "}"


def workload() -> dict[str, str]:
    """A native stack, single topology, after a few minutes of logging, and a ClearML server with an
    agent: each series its exporters give, sampled every 15s for 10 minutes (promtool's notation).
    No backup yet, no ha replica, no 5xx, no exception: the panels must answer without them."""
    jobs = {
        "mlflow": 9189,
        "postgres": 9187,
        "seaweedfs": 9327,
        "mlstack": 9188,
        "prometheus": 9090,
        "alertmanager": 9093,
    }
    found = {series("up", job, port): "1x40" for job, port in jobs.items()}
    # requests every 15s per route: how many answered within each bucket's bound
    for method, status, route, within in [
        ("POST", "200", "/api/2.0/mlflow/runs/log-batch", [100, 118, 120, 120]),
        ("GET", "200", "/api/2.0/mlflow/runs/get", [20, 30, 30, 30]),
        ("GET", "404", "other", [1, 1, 1, 1]),
    ]:
        labels, total = {"method": method, "status": status}, f"0+{within[-1]}x40"
        for le, count in zip(["0.005", "0.05", "0.5", "+Inf"], within, strict=True):
            name = "mlflow_http_request_duration_seconds_bucket"
            found[series(name, "mlflow", 9189, **labels, route=route, le=le)] = f"0+{count}x40"
        found[series("mlflow_http_request_duration_seconds_count", "mlflow", 9189, **labels, route=route)] = total
        found[series("mlflow_http_request_total", "mlflow", 9189, **labels)] = total
    found[series("pg_up", "postgres", 9187)] = "1x40"
    for datname, state, count in [("mlflow", "idle", 10), ("mlflow", "active", 2), ("mlflow_auth", "idle", 1)]:
        found[series("pg_stat_activity_count", "postgres", 9187, datname=datname, state=state)] = f"{count}x40"
    found[series("pg_settings_max_connections", "postgres", 9187)] = "100x40"
    for name, labels, values in [
        ("mlflow_metric_points_written_total", {}, "0+6000x40"),
        *[("mlflow_runs", {"status": status}, f"{count}x40") for status, count in RUNS.items()],
        ("mlflow_experiments", {"lifecycle_stage": "active"}, "3x40"),
        ("mlflow_experiments", {"lifecycle_stage": "deleted"}, "0x40"),
        ("mlflow_registered_models", {}, "2x40"),
        ("mlflow_model_versions", {}, "5x40"),
        ("postgres_database_bytes", {"database": "mlflow"}, "50000000+100000x40"),
        ("postgres_database_bytes", {"database": "mlflow_auth"}, "8000000x40"),
        ("bucket_bytes", {"bucket": "mlflow-artifacts"}, "10000000+200000x40"),
        ("bucket_objects", {"bucket": "mlflow-artifacts"}, "100+2x40"),
        *[
            (f"filesystem_{kind}_bytes", {"path": path}, values)
            for path in ("/srv/mlstack/.mlstack", "/srv/mlstack/.mlstack/backups")
            for kind, values in (("avail", "60000000000-200000x40"), ("size", "100000000000x40"))
        ],
        ("spool_pending_files", {}, "0x40"),
        ("spool_set_aside_files", {}, "0x40"),
        *[
            (f"source_{kind}", {"source": source}, values)
            for source in ("postgres", "s3", "backups", "spool", "clearml")
            for kind, values in (("up", "1x40"), ("scrape_seconds", "0.02x40"))
        ],
        ("clearml_queue_tasks", {"queue": "default"}, "0 1 2 1 0x37"),
        ("clearml_queue_workers", {"queue": "default"}, "1x40"),
        ("clearml_queue_tasks", {"queue": "services"}, "0x40"),
        ("clearml_queue_workers", {"queue": "services"}, "0x40"),
        ("clearml_workers", {}, "1x40"),
        *[("clearml_tasks", {"status": status}, f"{count}x40") for status, count in CLEARML_TASKS.items()],
    ]:
        found[series(f"mlstack_{name}", "mlstack", 9188, **labels)] = values
    return found


def boards() -> dict[str, dict]:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def panels(board: dict) -> list[dict]:
    """Every panel but the rows."""
    flat = [panel for top in board["panels"] for panel in (top, *top.get("panels", []))]
    return [panel for panel in flat if panel["type"] != "row"]


def record_name(index: int, query: PanelQuery) -> str:
    """A recording rule's name that says which panel's query it is."""
    return f"panel:{query.dashboard}:{index}_{re.sub(r'[^a-z0-9]+', '_', query.panel.lower()).strip('_')}"


def test_every_query_parses_and_answers_on_a_workload(tmp_path):
    queries = panel_queries()
    names = [record_name(index, query) for index, query in enumerate(queries)]
    rules = tmp_path / "panels.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "panels",
                        "rules": [{"record": n, "expr": q.expr} for n, q in zip(names, queries, strict=True)],
                    }
                ]
            }
        )
    )
    run_promtool("check", "rules", rules)
    unit_tests = tmp_path / "panels_test.yml"
    unit_tests.write_text(
        yaml.safe_dump(
            {
                "rule_files": [rules.name],
                "evaluation_interval": "15s",
                "tests": [
                    {
                        "interval": "15s",
                        "input_series": [{"series": name, "values": values} for name, values in workload().items()],
                        # absent(x) is empty exactly when x answered
                        "promql_expr_test": [
                            {"expr": f"absent({n})", "eval_time": "10m", "exp_samples": []} for n in names
                        ],
                    }
                ],
            }
        )
    )
    run_promtool("test", "rules", unit_tests)


def test_queries_need_only_prometheus():
    with_variables = [query for query in panel_queries() if "$" in query.expr]
    assert not with_variables, f"queries with Grafana variables Prometheus cannot evaluate: {with_variables}"


def test_panel_queries_cover_every_target_of_both_dashboards():
    expected = [
        (name, panel["title"], target["expr"])
        for name, board in boards().items()
        for panel in panels(board)
        for target in panel["targets"]
    ]
    assert [(q.dashboard, q.panel, q.expr) for q in panel_queries()] == expected
    assert {q.dashboard for q in panel_queries()} == {"mlflow", "clearml"}


def test_panel_queries_reads_the_panels_of_collapsed_rows(tmp_path):
    row = {"type": "row", "title": "Storage", "collapsed": True, "panels": [
        {"type": "timeseries", "title": "Bucket", "targets": [{"refId": "A", "expr": "mlstack_bucket_bytes"}]}
    ]}  # fmt: skip
    (tmp_path / "store.json").write_text(json.dumps({"panels": [row]}))
    (tmp_path / "notes.txt").write_text("not a dashboard")
    assert panel_queries(tmp_path) == [PanelQuery("store", "Bucket", "mlstack_bucket_bytes")]


def test_every_panel_uses_the_provisioned_prometheus():
    (datasource,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    wrong = [
        (name, panel["title"])
        for name, board in boards().items()
        for panel in panels(board)
        if panel["datasource"] != expected or any(target["datasource"] != expected for target in panel["targets"])
    ]
    assert not wrong, f"panels not on the datasource {expected}: {wrong}"


@pytest.mark.parametrize("name", ["mlflow", "clearml"])
def test_dashboard_is_well_formed(name):
    board = boards()[name]
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert board["id"] is None, "an exported id would clash with the one Grafana gives"
    assert board["uid"] == f"mlstack-{name}"
    assert board["templating"]["list"] == [], "variables would leave queries Prometheus cannot run"
    everything = [panel for top in board["panels"] for panel in (top, *top.get("panels", []))]
    ids = [panel["id"] for panel in everything]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    titles = [panel["title"] for panel in panels(board)]
    assert len(titles) == len(set(titles)), f"panel titles repeat: {titles}"
    for panel in panels(board):
        place = panel["gridPos"]
        assert place["x"] + place["w"] <= 24, panel["title"]
        assert panel["targets"] and all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_prometheus_graph_link():
    expr = 'sum by (route) (rate(mlflow_http_request_total{status=~"5.."}[5m]))'
    link = prometheus_graph_link("http://127.0.0.1:9090", expr)
    assert link.startswith("http://127.0.0.1:9090/graph?g0.expr=sum+by+%28route%29+")
    assert link.endswith("&g0.tab=0")
    assert parse_qs(urlsplit(link).query) == {"g0.expr": [expr], "g0.tab": ["0"]}
    assert prometheus_graph_link("https://ops.example.org/prometheus/", "up").startswith(
        "https://ops.example.org/prometheus/graph?g0.expr=up&"
    )


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "ftp://127.0.0.1:9090", "http://", "http://127.0.0.1:9090/?x=1", ""])
def test_prometheus_graph_link_refuses_what_is_no_prometheus_url(url):
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        prometheus_graph_link(url, "up")


def test_prometheus_graph_link_never_prints_a_password():
    with pytest.raises(ValueError, match=r"admin:\*\*\*@127.0.0.1:9090") as refused:
        prometheus_graph_link("http://admin:s3cret-Value@127.0.0.1:9090", "up")
    assert "s3cret" not in str(refused.value)

"""The alert rules (src/mlstack/conf/prometheus/alerts.yml): valid for Prometheus, each unit-tested
by promtool firing and staying quiet (alerts_test*.yml), each with a severity and a runbook whose
section exists in docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.promtool import run_promtool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "src/mlstack/conf/prometheus/alerts.yml"
#: Minutes evaluated every 15s, as Prometheus does; hours (backups, disks) every minute, to be quick.
UNIT_TESTS = [Path(__file__).with_name("alerts_test.yml"), Path(__file__).with_name("alerts_test_hours.yml")]
OPERATIONS = REPO / "docs/operations.md"
SEVERITIES = {"critical", "warning"}
ANNOTATIONS = {"summary", "description", "runbook", "runbook_url"}
#: The end-to-end test stops the server and waits for this alert at a webhook.
SERVER_DOWN, SERVER_DOWN_MOST_SECONDS = "MLflowServerDown", 60


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def seconds(duration: str) -> int:
    """A Prometheus duration as the rules write them (`30s`, `5m`, `1h`, `1h30m`)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", duration)
    assert parts and "".join(amount + unit for amount, unit in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(amount) * units[unit] for amount, unit in parts)


def test_prometheus_accepts_the_rules():
    run_promtool("check", "rules", RULES)


def test_unit_tests_pass():
    run_promtool("test", "rules", *UNIT_TESTS)


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = [test for path in UNIT_TESTS for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {alert["alert"] for alert in alerts()}
    assert not names - fires, f"alerts no unit test sees firing: {sorted(names - fires)}"
    assert not names - quiet, f"alerts no unit test sees staying quiet: {sorted(names - quiet)}"
    # promtool passes a quiet test of an alert that does not exist
    assert not (fires | quiet) - names, f"unit tests of alerts the rules lack: {sorted((fires | quiet) - names)}"


def test_every_alert_has_a_severity_and_a_runbook_section():
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {heading_anchor(heading) for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}
    problems = []
    for alert in alerts():
        name, labels, annotations = alert["alert"], alert.get("labels", {}), alert.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} is none of {sorted(SEVERITIES)}")
        if missing := ANNOTATIONS - annotations.keys():
            problems.append(f"{name}: no annotation {sorted(missing)}")
        expected_url = f"docs/operations.md#{name.lower()}"
        if annotations.get("runbook_url") != expected_url:
            problems.append(f"{name}: runbook_url {annotations.get('runbook_url')!r}, not {expected_url!r}")
        if name.lower() not in anchors:
            problems.append(f"{name}: docs/operations.md has no section {name!r}")
    assert not problems, "\n".join(problems)


def test_server_down_fires_within_a_minute():
    (server_down,) = [alert for alert in alerts() if alert["alert"] == SERVER_DOWN]
    assert seconds(server_down.get("for", "0s")) <= SERVER_DOWN_MOST_SECONDS, server_down

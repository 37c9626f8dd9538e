"""The Grafana dashboards' queries (conf/grafana/dashboards/*.json, the one definition of each panel),
and Prometheus' own page for a query: what `mlstack status` links to where Grafana does not run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any
from urllib.parse import quote_plus, urlsplit

from mlstack.settings import PACKAGED_CONF

DASHBOARDS = PACKAGED_CONF / "grafana" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    """One query of a panel: `dashboard` is its file's name (`mlflow`, `clearml`), `panel` the panel's title."""

    dashboard: str
    panel: str
    expr: str


def panel_queries(folder: Traversable = DASHBOARDS) -> list[PanelQuery]:
    """Every query of every panel of the dashboards in `folder`, by dashboard name, then in panel order."""
    boards = sorted((entry for entry in folder.iterdir() if entry.name.endswith(".json")), key=lambda e: e.name)
    return [
        PanelQuery(board.name.removesuffix(".json"), panel["title"], target["expr"])
        for board in boards
        for panel in _panels(json.loads(board.read_text(encoding="utf-8"))["panels"])
        for target in panel.get("targets", [])
    ]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The panels, with those a collapsed row holds after it."""
    for panel in panels:
        yield panel
        yield from panel.get("panels", [])


def prometheus_graph_link(prometheus_url: str, expr: str) -> str:
    """Prometheus' graph page for `expr`, in the form of Prometheus' own graph links
    (`<url>/graph?g0.expr=...&g0.tab=0`); `prometheus_url` may carry a path prefix."""
    parts = urlsplit(prometheus_url)
    if parts.password is not None:
        shown = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
        raise ValueError(f"a Prometheus URL to print must not hold a password: {shown.geturl()}")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"not a Prometheus URL (http[s]://host[:port][/prefix]): {prometheus_url!r}")
    return f"{prometheus_url.rstrip('/')}/graph?g0.expr={quote_plus(expr)}&g0.tab=0"

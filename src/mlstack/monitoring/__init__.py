"""Seeing the platform (docs/operations.md): mlstack's own exporter, the Prometheus and Alertmanager
configurations made from the stack's definition, and the dashboards' queries."""

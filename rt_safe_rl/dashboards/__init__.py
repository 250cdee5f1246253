"""Grafana dashboards (JSON) for the monitor's Prometheus metrics; see generate.py."""

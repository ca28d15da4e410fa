"""Logs, request ids, readiness and metrics: what operators see of the gateway."""

"""What operators see and run: the CLI, top/status/inspect views and charts, health probes, metrics, logs,
the demo and the operator requeue."""

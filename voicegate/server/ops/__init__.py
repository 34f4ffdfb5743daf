"""voicegate.server.ops: what an operator reads from a running node: Prometheus
metrics, health and readiness on a second address, and profiles.

Modules:
    app         ``security.metrics_bind``: /metrics, /healthz and /readyz on a second address
    profiling   ``voicegate profile``: py-spy on a running node, the supervisor and all its workers
    prometheus  Prometheus text exposition (format 0.0.4) of the whole node, for ``GET /metrics``
"""

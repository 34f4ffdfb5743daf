"""voicegate.server: a node's front: ``voicegate serve``, the gateway processes and
their WebSocket protocols, security, operations and the command line.

Modules:
    cli/        The ``voicegate`` command line (``main``) and the commands that exist only as
                command line
    gateway/    The gateway: the node-facing side of every client connection, whatever its wire
                protocol (``voicegate.server.protocols``)
    ops/        What an operator reads from a running node: Prometheus metrics, health and
                readiness on a second address, and profiles
    protocols/  The wire protocols the gateway speaks, one module per protocol, and their registry
    security/   Who may open a session or read /metrics: API keys, session tokens, TLS, and the
                checks made before a node serves
    serve       ``voicegate serve``: the supervisor, its workers and N gateway processes on one
                port
    web/        The talk page: a browser client of ``/v1/stream`` that every gateway serves when
                ``[web] page`` says so (docs/web.md)
"""

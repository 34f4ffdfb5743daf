"""voicegate.server.security: who may open a session or read /metrics: API keys,
session tokens, TLS, and the checks made before a node serves.

Modules:
    auth     Who may open a session, read /metrics or get a session token: the gateway's guard
    keys     API keys: a JSON file of hashes, never the keys themselves
    startup  ``voicegate serve``'s security options and the checks made before a node starts
    tls      TLS on the node's own port: one ``ssl.SSLContext`` per gateway process
    tokens   Short-lived session tokens: JWTs (HS256, PyJWT) signed with the node's secret
"""

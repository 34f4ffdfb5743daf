"""``voicegate keys create|list|revoke``: the node's API keys (voicegate.server.security.keys).

The file is ``--keys-file``, else ``security.keys_file`` of the configuration
(``--config``, $VOICEGATE_CONFIG, ``VOICEGATE_SECURITY_KEYS_FILE``). Running gateways
see a change at their next handshake. Exit status 2 for bad arguments or a bad file,
1 when ``revoke`` finds no such key.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from voicegate.core.config import ConfigError, load_config
from voicegate.server.security.keys import (
    PROTOCOLS,
    KeyFileError,
    create_key,
    read_keys,
    revoke_key,
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--keys-file", type=Path, help="default: security.keys_file")
        p.add_argument("--config", type=Path, help="node configuration (TOML)")

    create = actions.add_parser("create", help="make a key; it is printed once, never stored")
    create.add_argument("name", help="who or what uses the key (shown in the audit log)")
    create.add_argument("--max-sessions", type=int, help="concurrent sessions with this key")
    create.add_argument(
        "--protocols",
        help=f"comma-separated protocols the key may open ({', '.join(PROTOCOLS)}; default all)",
    )
    common(create)
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="the keys: name, id, created, revoked, limits")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    common(listing)
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by name or id (at once)")
    revoke.add_argument("name", help="the key's name or id")
    common(revoke)
    revoke.set_defaults(handler=_revoke)


def _keys_file(args: argparse.Namespace) -> Path:
    if args.keys_file is not None:
        return Path(args.keys_file)
    path = load_config(args.config).security.keys_file
    if path is None:
        raise ValueError("no keys file: pass --keys-file or set security.keys_file")
    return path


def _create(args: argparse.Namespace) -> int:
    try:
        path = _keys_file(args)
        protocols = (
            None
            if args.protocols is None
            else [p.strip() for p in args.protocols.split(",") if p.strip()]
        )
        key, record = create_key(
            path, args.name, max_sessions=args.max_sessions, protocols=protocols
        )
    except (ConfigError, ValueError, OSError) as exc:
        print(f"voicegate keys create: {exc}", file=sys.stderr)
        return 2
    print(f"# key {record.name!r} (id {record.key_id}) stored in {path}", file=sys.stderr)
    print("# shown once: store it now; only its hash is kept", file=sys.stderr)
    print(key)
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        path = _keys_file(args)
        keys = read_keys(path)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"voicegate keys list: {exc}", file=sys.stderr)
        return 2
    rows = [("NAME", "ID", "CREATED", "REVOKED", "MAX_SESSIONS", "PROTOCOLS")]
    for k in keys:
        if not k.active and not args.all:
            continue
        rows.append(
            (
                k.name,
                k.key_id,
                _when(k.created),
                _when(k.revoked) if k.revoked is not None else "-",
                str(k.max_sessions) if k.max_sessions is not None else "-",
                ",".join(k.protocols) if k.protocols is not None else "all",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        path = _keys_file(args)
        revoked = revoke_key(path, args.name)
    except (ConfigError, KeyFileError, ValueError, OSError) as exc:
        print(f"voicegate keys revoke: {exc}", file=sys.stderr)
        return 2
    if not revoked:
        print(f"voicegate keys revoke: no active key {args.name!r} in {path}", file=sys.stderr)
        return 1
    for k in revoked:
        print(f"revoked {k.name!r} (id {k.key_id}): refused from the next handshake")
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

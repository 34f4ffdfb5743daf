"""``voicegate config show [--config FILE]``: print the effective configuration.

Exit status 2 on a configuration error, whose message names the key, the bad value
and where it came from.
"""

from __future__ import annotations

import argparse
import sys

from voicegate.core.config import ConfigError
from voicegate.core.config_show import render_config


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``config`` on the CLI's subcommand action."""
    parser = commands.add_parser("config", help="inspect the node configuration")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", help="print the effective configuration (file + VOICEGATE_* env) as TOML"
    )
    show.add_argument("--config", help="TOML file (default: $VOICEGATE_CONFIG, else defaults)")
    show.set_defaults(handler=show_config)


def show_config(args: argparse.Namespace) -> int:
    try:
        text = render_config(args.config)
    except ConfigError as exc:
        print(f"voicegate: configuration error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0

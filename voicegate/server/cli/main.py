"""The `voicegate` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from voicegate import __version__
from voicegate.server import serve
from voicegate.server.cli import config_command, keys_command, talk
from voicegate.server.cli.models_command import register as register_models
from voicegate.server.ops import profiling


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"voicegate {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_models(commands)
    talk.add_parser(commands)
    serve.add_parser(commands)
    config_command.add_parser(commands)
    keys_command.add_parser(commands)
    profiling.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = handler(args)
    return result

"""Run a node's supervisor: ``python -m voicegate.workers [--config FILE]``.

Exit status: 0 after SIGTERM/SIGINT, 1 when the node failed (the reason is logged),
2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from setproctitle import setproctitle

from voicegate.core.config import ConfigError, load_config
from voicegate.core.logs import setup_node_logging
from voicegate.workers.runtime.supervisor import Supervisor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voicegate.workers", description=__doc__)
    parser.add_argument("--config", help="TOML file (default: $VOICEGATE_CONFIG, else defaults)")
    parser.add_argument("--log-level", help="overrides [logging] level")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.log_level:
            settings = dataclasses.replace(config.logging, level=args.log_level)
            config = dataclasses.replace(config, logging=settings)
    except ConfigError as exc:
        print(f"voicegate: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_node_logging(config.logging)
    setproctitle(f"voicegate: supervisor {config.node.name}")
    return Supervisor(config).run()


if __name__ == "__main__":
    sys.exit(main())

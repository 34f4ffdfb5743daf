"""The systemd watchdog is pinged only while the node is whole: every worker running and
every supervised child (the gateways) alive (issue 15, defect 4)."""

from __future__ import annotations

from typing import Any

from voicegate.core.config import NodeConfig
from voicegate.workers.runtime.supervisor import Supervisor


class Notes:
    def __init__(self) -> None:
        self.pings = 0

    def watchdog_if_due(self, now_s: float) -> None:
        self.pings += 1

    def status(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class Gateways:
    def __init__(self) -> None:
        self.alive = True

    def sentinels(self) -> list[int]:
        return []

    def check(self, now: int) -> None:
        pass

    def whole(self) -> bool:
        return self.alive


def test_no_watchdog_ping_while_a_gateway_is_down() -> None:
    notes, gateways = Notes(), Gateways()
    supervisor = Supervisor(NodeConfig(), notifier=notes, children=gateways)  # type: ignore[arg-type]
    report: Any = supervisor._report  # the supervise loop's reporting step
    report(1)
    assert notes.pings == 1
    gateways.alive = False
    report(2)
    assert notes.pings == 1
    gateways.alive = True
    report(3)
    assert notes.pings == 2

"""Prometheus text exposition (format 0.0.4) of the node's status blocks and a gateway's
own counters, for ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Mapping

from voicegate.workers.status import BUCKET_BOUNDS_NS, StatusSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(
    node: Mapping[str, StatusSnapshot],
    gateway: Mapping[str, int],
    gateway_index: int,
    latency_ms: Mapping[str, list[float]],
) -> str:
    """``node``: ``read_node_status``; ``gateway``: this gateway's counters by name;
    ``latency_ms``: recent per-stage latencies of answered turns (ms)."""
    lines: list[str] = []
    gw = f'gateway="{gateway_index}"'
    for name, value in sorted(gateway.items()):
        metric = f"voicegate_gateway_{name}"
        kind = "gauge" if name.endswith(("_active", "_occupancy_bytes", "_free")) else "counter"
        suffix = "" if kind == "gauge" else "_total"
        lines.append(f"# TYPE {metric}{suffix} {kind}")
        lines.append(f"{metric}{suffix}{{{gw}}} {value}")
    lines.append("# TYPE voicegate_process_up gauge")
    for process, snap in sorted(node.items()):
        lines.append(
            f'voicegate_process_up{{process="{_label(process)}",state="{snap.state.name}",'
            f'pid="{snap.pid}"}} 1'
        )
    lines.append("# TYPE voicegate_process_heartbeat_age_seconds gauge")
    for process, snap in sorted(node.items()):
        lines.append(
            f'voicegate_process_heartbeat_age_seconds{{process="{_label(process)}"}} '
            f"{snap.heartbeat_age_s:.6f}"
        )
    lines.append("# TYPE voicegate_process_counter gauge")
    for process, snap in sorted(node.items()):
        for counter, value in sorted(snap.counters.items()):
            lines.append(
                f'voicegate_process_counter{{process="{_label(process)}",'
                f'counter="{_label(counter.lower())}"}} {value}'
            )
    lines.append("# TYPE voicegate_process_seconds histogram")
    for process, snap in sorted(node.items()):
        for hist_name, hist in sorted(snap.histograms.items()):
            labels = f'process="{_label(process)}",histogram="{_label(hist_name.lower())}"'
            cumulative = 0
            for bound, count in zip(BUCKET_BOUNDS_NS, hist.buckets.tolist(), strict=False):
                cumulative += int(count)
                lines.append(
                    f'voicegate_process_seconds_bucket{{{labels},le="{bound / 1e9:.9g}"}} '
                    f"{cumulative}"
                )
            lines.append(f'voicegate_process_seconds_bucket{{{labels},le="+Inf"}} {hist.count}')
            lines.append(f"voicegate_process_seconds_sum{{{labels}}} {hist.sum_ns / 1e9:.9f}")
            lines.append(f"voicegate_process_seconds_count{{{labels}}} {hist.count}")
    lines.append("# TYPE voicegate_turn_latency_ms summary")
    for stage, values in sorted(latency_ms.items()):
        if not values:
            continue
        ordered = sorted(values)
        for q in (0.5, 0.95):
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            lines.append(f'voicegate_turn_latency_ms{{{gw},stage="{stage}",quantile="{q}"}} {v}')
        lines.append(f'voicegate_turn_latency_ms_sum{{{gw},stage="{stage}"}} {sum(values)}')
        lines.append(f'voicegate_turn_latency_ms_count{{{gw},stage="{stage}"}} {len(values)}')
    return "\n".join(lines) + "\n"

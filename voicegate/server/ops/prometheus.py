"""Prometheus text exposition (format 0.0.4) of the whole node, for ``GET /metrics``.

Every process of a node counts into memory that any gateway can read: its status block
(``voicegate.workers.runtime.status``: counters and histograms, read by
``voicegate.workers.runtime.metrics.read_node_status``) and the rings' own shared counters (read
through observer handles, ``RingObservers``). A gateway renders them here together with
its own in-process counters. We use these counters in shared memory rather than
prometheus_client's multiprocess mode because:

- no extra dependency: the blocks and rings exist anyway for supervision and transport;
- no per-process files: multiprocess mode writes one mmap file per process id into a
  directory that must be cleaned between runs and grows with every worker restart;
- the hot path only adds to an int64 word in memory the process already has mapped, with
  no lock, no label lookup and no system call;
- a dead process's counters survive it: a replacement worker attaches to the same block,
  so exported counters stay monotonic across restarts without any merging of files;
- every gateway can render the whole node: each scrape of any gateway sees every
  process and every ring, so a load balancer may send the scrape anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from voicegate.workers.runtime.status import (
    BUCKET_BOUNDS_NS,
    SIZE_BOUNDS,
    Field,
    HistogramSnapshot,
    StatusSnapshot,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Gateway counters: name in Gateway.counters -> (metric type, help). Counters get
# ``voicegate_gateway_<name>_total``, gauges ``voicegate_gateway_<name>``.
GATEWAY_METRICS: Mapping[str, tuple[str, str]] = {
    "sessions_active": ("gauge", "Sessions open on this gateway now."),
    "sessions": ("counter", "Sessions admitted by this gateway."),
    "sessions_rejected": ("counter", "Sessions refused at admission (node at capacity)."),
    "auth_refused": ("counter", "Requests refused for a missing, invalid or unpermitted key."),
    "origin_refused": ("counter", "Browser handshakes refused for their Origin."),
    "tokens_issued": ("counter", "Session tokens issued by POST /v1/tokens."),
    "node_free_sessions": ("gauge", "Sessions the node can still admit, across gateways."),
    "frames_in": ("counter", "Audio frames received from clients and sent to the pipeline."),
    "frames_in_dropped": ("counter", "Audio frames dropped because the ring to VAD was full."),
    "frames_out": ("counter", "Answer audio frames sent to clients."),
    "records_stale_dropped": ("counter", "Pipeline records of void turns dropped."),
    "records_malformed": ("counter", "Pipeline records with a malformed payload dropped."),
    "slow_client_degraded": ("counter", "Clients switched to a smaller output format."),
    "slow_client_closed": ("counter", "Clients closed for not taking their audio."),
    "turns_committed": ("counter", "Turns whose end was confirmed and answer released."),
    "turns_cancelled": ("counter", "Speculative answers voided because the user spoke on."),
    "barge_ins": ("counter", "Answers interrupted by the user speaking over them."),
    "turns_failed": ("counter", "Turns lost to a pipeline worker restart or a stage failure."),
    "connections_refused_address": (
        "counter",
        "Connections refused: too many open from the client's address.",
    ),
    "connections_timed_out": (
        "counter",
        "Connections closed for sending no session.start, or nothing at all, in time.",
    ),
    "handshakes_timed_out": (
        "counter",
        "Connections dropped for not completing the WebSocket upgrade request in time.",
    ),
    "frames_in_dropped_unfair": (
        "counter",
        "Audio frames of sessions ahead of real time refused while the ring to VAD was "
        "half full (its other half is kept for real-time sessions).",
    ),
    "sessions_rate_limited": (
        "counter",
        "Sessions closed for audio ahead of real time or text.input too often.",
    ),
    "ring_to_pipeline_occupancy_bytes": ("gauge", "Bytes waiting in this gateway's ring to VAD."),
    "ring_from_pipeline_occupancy_bytes": (
        "gauge",
        "Bytes waiting in the ring from TTS to this gateway.",
    ),
}

# Status block counters exported one to one: (field, metric, help). RESTARTS, SESSIONS,
# the DROPPED_* fields and the ns fields get their own families below.
_PROCESS_COUNTERS: tuple[tuple[Field, str, str], ...] = (
    (Field.RECORDS_IN, "voicegate_process_records_in_total", "Records read."),
    (Field.RECORDS_OUT, "voicegate_process_records_out_total", "Records written."),
    (Field.BATCHES, "voicegate_process_batches_total", "Batches of records handled."),
    (Field.TICKS, "voicegate_process_ticks_total", "Time-driven ticks run."),
    (
        Field.UNSTAMPED,
        "voicegate_process_unstamped_records_total",
        "Records without a send stamp (no ring wait measured).",
    ),
    (
        Field.SESSION_FAILURES,
        "voicegate_process_session_failures_total",
        "Session turns a stage failed on; the worker went on serving the others.",
    ),
)
_DROP_REASONS: tuple[tuple[Field, str], ...] = (
    (Field.DROPPED_STALE, "stale"),
    (Field.DROPPED_UNKNOWN, "unknown_session"),
    (Field.DROPPED_OUTPUT, "output_full_at_shutdown"),
    (Field.DROPPED_UNROUTABLE, "unroutable"),
)
_DURATION_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    (
        "ring_wait",
        "voicegate_stage_ring_wait_seconds",
        "Time records waited in a ring, from the send stamp to the read.",
    ),
    (
        "compute",
        "voicegate_stage_compute_seconds",
        "Time of the stage call that handled each record.",
    ),
    ("tick", "voicegate_stage_tick_seconds", "Duration of each time-driven tick."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return f"{value:.9g}"


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: str, value: float | int) -> None:
        text = str(value) if isinstance(value, int) else _number(value)
        self.lines.append(f"{name}{{{labels}}} {text}" if labels else f"{name} {text}")

    def histogram(
        self,
        name: str,
        labels: str,
        hist: HistogramSnapshot,
        bounds: Iterable[str],
        total: float | int,
    ) -> None:
        cumulative = 0
        for bound, count in zip(bounds, hist.buckets.tolist(), strict=False):
            cumulative += int(count)
            self.sample(f"{name}_bucket", f'{labels},le="{bound}"', cumulative)
        self.sample(f"{name}_bucket", f'{labels},le="+Inf"', hist.count)
        self.sample(f"{name}_sum", labels, total)
        self.sample(f"{name}_count", labels, hist.count)


def render(
    node: Mapping[str, StatusSnapshot],
    gateway: Mapping[str, int],
    gateway_index: int,
    latency_ms: Mapping[str, list[float]],
    rings: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """``node``: ``read_node_status``; ``gateway``: this gateway's counters by name
    (each must be in ``GATEWAY_METRICS``); ``latency_ms``: recent per-stage latencies of
    answered turns (ms); ``rings``: ``RingObservers.read``, stats by edge."""
    out = _Exposition()
    _render_gateway(out, gateway, gateway_index)
    _render_processes(out, node)
    _render_rings(out, rings or {})
    _render_latency(out, latency_ms, gateway_index)
    return "\n".join(out.lines) + "\n"


def _render_gateway(out: _Exposition, gateway: Mapping[str, int], index: int) -> None:
    unknown = sorted(set(gateway) - set(GATEWAY_METRICS))
    if unknown:
        raise ValueError(f"gateway counters without a metric definition: {unknown}")
    for name, (kind, help_text) in GATEWAY_METRICS.items():
        if name not in gateway:
            continue
        metric = f"voicegate_gateway_{name}" + ("_total" if kind == "counter" else "")
        out.family(metric, kind, help_text)
        out.sample(metric, f'gateway="{index}"', gateway[name])


def _render_processes(out: _Exposition, node: Mapping[str, StatusSnapshot]) -> None:
    procs = sorted(node.items())

    def each(metric: str, kind: str, help_text: str, field: Field) -> None:
        out.family(metric, kind, help_text)
        for process, snap in procs:
            out.sample(metric, f'process="{_label(process)}"', snap.counters[field.name.lower()])

    out.family("voicegate_process_up", "gauge", "A status block of the node, with its state.")
    for process, snap in procs:
        out.sample(
            "voicegate_process_up",
            f'process="{_label(process)}",state="{snap.state.name}",pid="{snap.pid}"',
            1,
        )
    out.family(
        "voicegate_process_heartbeat_age_seconds", "gauge", "Seconds since the last heartbeat."
    )
    for process, snap in procs:
        out.sample(
            "voicegate_process_heartbeat_age_seconds",
            f'process="{_label(process)}"',
            float(snap.heartbeat_age_s),
        )
    each(
        "voicegate_worker_restarts_total",
        "counter",
        "Replacements of the process after a failure.",
        Field.RESTARTS,
    )
    each(
        "voicegate_process_generation",
        "gauge",
        "Processes that have run with this status block so far.",
        Field.GENERATION,
    )
    each("voicegate_process_sessions", "gauge", "Sessions open at the process now.", Field.SESSIONS)
    for field, metric, help_text in _PROCESS_COUNTERS:
        each(metric, "counter", help_text, field)
    out.family("voicegate_process_records_dropped_total", "counter", "Records dropped, by reason.")
    for process, snap in procs:
        for field, reason in _DROP_REASONS:
            out.sample(
                "voicegate_process_records_dropped_total",
                f'process="{_label(process)}",reason="{reason}"',
                snap.counters[field.name.lower()],
            )
    seconds = (
        (
            Field.OUTPUT_WAIT_NS,
            "voicegate_process_output_wait_seconds_total",
            "counter",
            "Time blocked on a full output ring (backpressure).",
        ),
        (
            Field.LOAD_NS,
            "voicegate_process_model_load_seconds",
            "gauge",
            "Model load time of the current process.",
        ),
        (
            Field.LAST_REPLACE_NS,
            "voicegate_worker_last_replace_seconds",
            "gauge",
            "Failure detected to replacement ready, for the last replacement.",
        ),
    )
    for field, metric, kind, help_text in seconds:
        out.family(metric, kind, help_text)
        for process, snap in procs:
            value = snap.counters[field.name.lower()] / 1e9
            out.sample(metric, f'process="{_label(process)}"', value)
    ns_bounds = [_number(b / 1e9) for b in BUCKET_BOUNDS_NS]
    for hist_name, metric, help_text in _DURATION_HISTOGRAMS:
        out.family(metric, "histogram", help_text)
        for process, snap in procs:
            hist = snap.histograms[hist_name]
            out.histogram(
                metric, f'process="{_label(process)}"', hist, ns_bounds, hist.sum_ns / 1e9
            )
    out.family(
        "voicegate_model_batch_size",
        "histogram",
        "Items per model call: VAD chunks, STT utterances, LLM decode rows, TTS clauses.",
    )
    size_bounds = [str(b) for b in SIZE_BOUNDS]
    for process, snap in procs:
        hist = snap.histograms["batch"]
        out.histogram(
            "voicegate_model_batch_size",
            f'process="{_label(process)}"',
            hist,
            size_bounds,
            hist.sum_ns,
        )


# Ring stats key -> (metric, type, extra labels, help). Parks and wake-ups are split by
# side, so one family each with a label rather than four families.
_RING_METRICS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "occupancy_bytes",
        "voicegate_ring_occupancy_bytes",
        "gauge",
        "",
        "Bytes published and not yet released by the consumer.",
    ),
    ("capacity", "voicegate_ring_capacity_bytes", "gauge", "", "Ring data capacity."),
    ("written", "voicegate_ring_written_total", "counter", "", "Records published."),
    ("read", "voicegate_ring_read_total", "counter", "", "Records released by the consumer."),
    (
        "dropped_full",
        "voicegate_ring_dropped_full_total",
        "counter",
        "",
        "Writes refused for lack of space (full events).",
    ),
    (
        "consumer_parks",
        "voicegate_ring_parks_total",
        "counter",
        'side="consumer"',
        "Times a side parked on the ring's semaphore.",
    ),
    ("producer_parks", "voicegate_ring_parks_total", "counter", 'side="producer"', ""),
    (
        "wakeups_sent",
        "voicegate_ring_wakeups_total",
        "counter",
        'side="consumer"',
        "Wake-ups sent to a parked side.",
    ),
    ("space_wakeups_sent", "voicegate_ring_wakeups_total", "counter", 'side="producer"', ""),
)


def _render_rings(out: _Exposition, rings: Mapping[str, Mapping[str, int]]) -> None:
    edges = sorted(rings.items())
    for key, metric, kind, extra, help_text in _RING_METRICS:
        if help_text:
            out.family(metric, kind, help_text)
        for edge, stats in edges:
            labels = f'edge="{_label(edge)}"' + (f",{extra}" if extra else "")
            out.sample(metric, labels, int(stats[key]))


def _render_latency(
    out: _Exposition, latency_ms: Mapping[str, list[float]], gateway_index: int
) -> None:
    gw = f'gateway="{gateway_index}"'
    out.family(
        "voicegate_turn_latency_ms",
        "summary",
        "Per-part latency of recent answered turns on this gateway (ms).",
    )
    for stage, values in sorted(latency_ms.items()):
        if not values:
            continue
        ordered = sorted(values)
        labels = f'{gw},stage="{_label(stage)}"'
        for q in (0.5, 0.95):
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            out.sample("voicegate_turn_latency_ms", f'{labels},quantile="{q}"', float(v))
        out.sample("voicegate_turn_latency_ms_sum", labels, float(sum(values)))
        out.sample("voicegate_turn_latency_ms_count", labels, len(values))

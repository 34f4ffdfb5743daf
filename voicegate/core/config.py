"""Node configuration: one TOML file, then ``VOICEGATE_*`` environment overrides.

Every section is a frozen dataclass that validates itself, so a configuration built in
code is checked exactly like one read from a file. Errors name the key, the bad value and
where it came from::

    health.heartbeat_timeout_s = -1 (from VOICEGATE_HEALTH_HEARTBEAT_TIMEOUT_S): must be > 0

Environment overrides are named ``VOICEGATE_<SECTION>_<KEY>`` (``VOICEGATE_NODE_GATEWAYS``,
``VOICEGATE_WORKERS_STT_CPUS``); they are matched against the known keys, so other
``VOICEGATE_*`` variables (``VOICEGATE_DEBUG``, ``VOICEGATE_CONFIG``) are left alone.
Stage options (``[workers.<stage>.options]``) are free-form and file-only. A later part
of the node adds a section by adding a field to ``NodeConfig``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from voicegate.core.kinds import MAX_GATEWAYS
from voicegate.core.layout import MAX_CAPACITY, MIN_CAPACITY

if TYPE_CHECKING:
    from voicegate.server.protocols.native_wire import ProtocolLimits

ENV_PREFIX: Final[str] = "VOICEGATE_"
CONFIG_ENV: Final[str] = "VOICEGATE_CONFIG"  # path of the TOML file when none is given

# The pipeline of docs/pipeline.md, in data-flow order.
STAGES: Final[tuple[str, ...]] = ("vad", "stt", "llm", "tts")
RING_IMPLS: Final[tuple[str, ...]] = ("native", "reference")
PROVIDERS: Final[tuple[str, ...]] = ("cpu", "cuda", "tensorrt")
# The model-backed stage of each pipeline position (they need ``node.bundle``).
DEFAULT_STAGES: Final[Mapping[str, str]] = types.MappingProxyType({
    "vad": "voicegate.workers.vad_stage:VadStage",
    "stt": "voicegate.workers.stt_stage:SttStage",
    "llm": "voicegate.workers.llm_stage:LlmStage",
    "tts": "voicegate.workers.tts_stage:TtsStage",
})
# A stage without a model that forwards every record: the runtime's tests run on it.
PASSTHROUGH_STAGE: Final[str] = "voicegate.workers.passthrough:PassThroughStage"

_NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""

    def __init__(self, key: str, value: object, problem: str, source: str = "") -> None:
        self.key = key
        self.value = value
        self.problem = problem
        self.source = source
        where = f" (from {source})" if source else ""
        super().__init__(f"{key} = {value!r}{where}: {problem}")


def _check(ok: bool, key: str, value: object, problem: str) -> None:
    if not ok:
        raise ConfigError(key, value, problem)


def option_number(
    options: Mapping[str, Any], prefix: str, key: str, default: float, *, minimum: float = 0.0
) -> float:
    """A numeric stage option, ``default`` when absent; a ConfigError names ``prefix.key``."""
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{prefix}.{key}", value, "must be a number")
    if value < minimum:
        raise ConfigError(f"{prefix}.{key}", value, f"must be >= {minimum:g}")
    return float(value)


# The VAD stage's option; here because the gateway reads it too (to date the audio that
# completed the silence) and must not import the stage (its model runtime).
END_OF_TURN_SILENCE_MS: Final[float] = 300.0


def end_of_turn_silence_ms(options: Mapping[str, Any]) -> float:
    """The silence that ends a turn, from ``[workers.vad.options]``."""
    return option_number(
        options, "workers.vad.options", "end_of_turn_silence_ms", END_OF_TURN_SILENCE_MS
    )


@dataclass(frozen=True)
class NodeSettings:
    """[node]: identity of this node and process-level settings."""

    section: ClassVar[str] = "node"

    name: str = "main"  # shared-memory names are vg-<name>-...: unique per node on a host
    gateways: int = 1  # gateway processes, each with its own ring pair
    drain_timeout_s: float = 10.0  # on SIGTERM: how long turns in flight may finish
    stop_timeout_s: float = 5.0  # then how long a worker may take to exit before SIGKILL
    bundle: Path | None = None  # model bundle directory used by the stages
    provider: str = "cpu"  # onnxruntime execution provider: cpu | cuda | tensorrt
    device_id: int = 0

    def __post_init__(self) -> None:
        _check(
            bool(_NODE_NAME.match(self.name)),
            "node.name",
            self.name,
            "must be 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit",
        )
        _check(
            1 <= self.gateways <= MAX_GATEWAYS,
            "node.gateways",
            self.gateways,
            f"must be between 1 and {MAX_GATEWAYS}",
        )
        _check(
            self.drain_timeout_s >= 0, "node.drain_timeout_s", self.drain_timeout_s, "must be >= 0"
        )
        _check(self.stop_timeout_s > 0, "node.stop_timeout_s", self.stop_timeout_s, "must be > 0")
        _check(
            self.provider in PROVIDERS,
            "node.provider",
            self.provider,
            f"must be one of {', '.join(PROVIDERS)}",
        )
        _check(self.device_id >= 0, "node.device_id", self.device_id, "must be >= 0")


@dataclass(frozen=True)
class RingSettings:
    """[rings]: the shared-memory rings between processes."""

    section: ClassVar[str] = "rings"

    impl: str = "native"  # native (Cython) | reference (pure Python, same API)
    gateway_capacity: int = 1 << 21  # bytes, gateway -> vad and tts -> gateway rings
    stage_capacity: int = 1 << 21  # bytes, rings between two stages
    control_capacity: int = 1 << 16  # bytes, supervisor -> gateway control rings
    spin_us: float = 50.0  # spin this long before parking on the semaphore
    batch_records: int = 256  # records a worker takes from one ring per read

    def __post_init__(self) -> None:
        _check(
            self.impl in RING_IMPLS,
            "rings.impl",
            self.impl,
            f"must be one of {', '.join(RING_IMPLS)}",
        )
        for key in ("gateway_capacity", "stage_capacity", "control_capacity"):
            value = getattr(self, key)
            _check(
                MIN_CAPACITY <= value <= MAX_CAPACITY and value & (value - 1) == 0,
                f"rings.{key}",
                value,
                f"must be a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}",
            )
        _check(self.spin_us >= 0, "rings.spin_us", self.spin_us, "must be >= 0")
        _check(self.batch_records >= 1, "rings.batch_records", self.batch_records, "must be >= 1")


@dataclass(frozen=True)
class HealthSettings:
    """[health]: heartbeats, readiness and the restart policy."""

    section: ClassVar[str] = "health"

    heartbeat_interval_s: float = 0.1  # a worker beats at least this often
    # A worker whose beat is older than this is killed and replaced. It beats between
    # batches, so this must exceed the longest single model call.
    heartbeat_timeout_s: float = 5.0
    # A process the kernel shows stopped (SIGSTOP, a debugger) this long is killed and
    # replaced: found from its state, not after the heartbeat timeout.
    stopped_timeout_s: float = 0.5
    ready_timeout_s: float = 120.0  # start to ready (model load included)
    restart_backoff_s: float = 0.2  # delay before the first replacement; doubles per crash
    restart_backoff_max_s: float = 5.0
    max_restarts: int = 5  # more crashes of one worker than this within the window ...
    restart_window_s: float = 60.0  # ... make the supervisor exit non-zero

    def __post_init__(self) -> None:
        for key in (
            "heartbeat_interval_s",
            "stopped_timeout_s",
            "ready_timeout_s",
            "restart_window_s",
        ):
            _check(getattr(self, key) > 0, f"health.{key}", getattr(self, key), "must be > 0")
        _check(
            self.heartbeat_timeout_s >= 2 * self.heartbeat_interval_s,
            "health.heartbeat_timeout_s",
            self.heartbeat_timeout_s,
            f"must be at least twice health.heartbeat_interval_s ({self.heartbeat_interval_s})",
        )
        _check(
            self.restart_backoff_s >= 0,
            "health.restart_backoff_s",
            self.restart_backoff_s,
            "must be >= 0",
        )
        _check(
            self.restart_backoff_max_s >= self.restart_backoff_s,
            "health.restart_backoff_max_s",
            self.restart_backoff_max_s,
            f"must be >= health.restart_backoff_s ({self.restart_backoff_s})",
        )
        _check(self.max_restarts >= 0, "health.max_restarts", self.max_restarts, "must be >= 0")


@dataclass(frozen=True)
class WorkerSettings:
    """[workers.<stage>]: one pipeline stage. Validated by NodeConfig, which knows the
    stage name the keys live under."""

    # "package.module:Class" of the Stage to run; "": DEFAULT_STAGES of its position
    stage: str = ""
    cpus: tuple[int, ...] = ()  # CPU ids to pin to; empty: the default layout
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to the stage as is


@dataclass(frozen=True)
class GatewaySettings:
    """[gateway]: the gateway processes."""

    section: ClassVar[str] = "gateway"

    cpus: tuple[int, ...] = ()  # empty: the default layout
    # "auto": uvloop when installed, else asyncio's loop; "uvloop" requires it
    event_loop: str = "auto"
    # The send path to each client (docs/gateway.md, "Slow clients"):
    send_queue_frames: int = 100  # answer audio records queued per client (~2 s at 20 ms)
    stall_ms: float = 200.0  # a send blocked this long (queue full): the client is not reading
    lead_ms: float = 300.0  # answer audio is sent at most this far ahead of real time
    send_buffer_bytes: int = 0  # SO_SNDBUF of client sockets; 0: the kernel's autotuning
    # Answer audio the client's TCP stack has not acknowledged, in ms of its format, that
    # makes it a slow client, however large the kernel buffers are.
    unread_limit_ms: float = 2000.0

    def __post_init__(self) -> None:
        _check(
            self.event_loop in ("auto", "uvloop", "asyncio"),
            "gateway.event_loop",
            self.event_loop,
            "must be one of auto, uvloop, asyncio",
        )
        _check(
            self.send_queue_frames >= 1,
            "gateway.send_queue_frames",
            self.send_queue_frames,
            "must be >= 1",
        )
        for key in ("stall_ms", "unread_limit_ms"):
            _check(getattr(self, key) > 0, f"gateway.{key}", getattr(self, key), "must be > 0")
        for key in ("lead_ms", "send_buffer_bytes"):
            _check(getattr(self, key) >= 0, f"gateway.{key}", getattr(self, key), "must be >= 0")


@dataclass(frozen=True)
class LimitsSettings:
    """[limits]: what one caller (or one address) may take of a node. Each gateway
    process enforces them for its own connections; ``max_sessions`` is node-wide. The
    client-facing side of each is in docs/protocol.md (close codes, error events)."""

    section: ClassVar[str] = "limits"

    max_sessions: int = 256  # started sessions, node-wide (a connection counts once started)
    max_connections_per_address: int = 32  # open connections from one client address
    handshake_timeout_s: float = 5.0  # TCP accept to a complete HTTP upgrade request
    session_start_timeout_s: float = 10.0  # WebSocket open to session.start
    idle_timeout_s: float = 300.0  # no client message at all this long ends the session
    audio_burst_ms: float = 5000.0  # audio may run this far ahead of real time
    text_inputs_per_s: float = 2.0  # sustained text.input rate per session ...
    text_input_burst: int = 10  # ... above a burst of this many

    def __post_init__(self) -> None:
        for key in ("max_sessions", "max_connections_per_address", "text_input_burst"):
            _check(getattr(self, key) >= 1, f"limits.{key}", getattr(self, key), "must be >= 1")
        for key in (
            "handshake_timeout_s",
            "session_start_timeout_s",
            "idle_timeout_s",
            "audio_burst_ms",
            "text_inputs_per_s",
        ):
            _check(getattr(self, key) > 0, f"limits.{key}", getattr(self, key), "must be > 0")


LOG_LEVELS: Final[tuple[str, ...]] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LoggingSettings:
    """[logging]: how every process of the node logs (to stderr, for the journal)."""

    section: ClassVar[str] = "logging"

    level: str = "INFO"  # DEBUG | INFO | WARNING | ERROR | CRITICAL (any case)
    json: bool = False  # one JSON object per line instead of plain text
    # Keep what is marked as user content (transcripts, answers) and raw audio in the
    # logs instead of "[redacted]": for debugging on test data only.
    log_content: bool = False

    def __post_init__(self) -> None:
        _check(
            isinstance(self.level, str) and self.level.upper() in LOG_LEVELS,
            "logging.level",
            self.level,
            f"must be one of {', '.join(LOG_LEVELS)}",
        )
        object.__setattr__(self, "level", self.level.upper())


SSL_CLIENT_CERT: Final[tuple[str, ...]] = ("none", "optional", "required")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\[\]:-]+$")


@dataclass(frozen=True)
class SecuritySettings:
    """[security]: TLS, API keys, session tokens, Origin checks (docs/security.md)."""

    section: ClassVar[str] = "security"

    ssl_certfile: Path | None = None  # PEM certificate chain: the port speaks TLS >= 1.2
    ssl_keyfile: Path | None = None  # its private key
    ssl_ca_certs: Path | None = None  # CAs that sign client certificates (mutual TLS)
    ssl_client_cert: str = "none"  # none | optional | required: client certificates
    keys_file: Path | None = None  # API keys (voicegate keys create); set: auth is on
    no_auth: bool = False  # serve a non-loopback address without keys (explicit opt-out)
    token_secret_file: Path | None = None  # session token signing secret; unset: per start
    token_audience: str = "voicegate"  # the aud claim tokens are issued for and checked
    token_ttl_min: float = 5.0  # longest lifetime of a session token, minutes
    # Origins allowed to open sessions from a browser ("https://app.example", "*" for
    # any); empty: only the node's own origin. Clients without an Origin header pass.
    allowed_origins: tuple[str, ...] = ()
    metrics_bind: str = ""  # "HOST:PORT": /metrics also served there, without a key

    def __post_init__(self) -> None:
        _check(
            self.ssl_certfile is None or self.ssl_keyfile is not None,
            "security.ssl_certfile",
            str(self.ssl_certfile),
            "needs security.ssl_keyfile (the certificate's private key)",
        )
        _check(
            self.ssl_keyfile is None or self.ssl_certfile is not None,
            "security.ssl_keyfile",
            str(self.ssl_keyfile),
            "needs security.ssl_certfile (the certificate of this key)",
        )
        _check(
            self.ssl_client_cert in SSL_CLIENT_CERT,
            "security.ssl_client_cert",
            self.ssl_client_cert,
            f"must be one of {', '.join(SSL_CLIENT_CERT)}",
        )
        _check(
            self.ssl_client_cert == "none" or self.ssl_ca_certs is not None,
            "security.ssl_client_cert",
            self.ssl_client_cert,
            "verifying client certificates needs security.ssl_ca_certs",
        )
        _check(
            self.ssl_ca_certs is None or self.ssl_certfile is not None,
            "security.ssl_ca_certs",
            str(self.ssl_ca_certs),
            "needs security.ssl_certfile (client certificates exist only with TLS)",
        )
        _check(
            bool(self.token_audience.strip()),
            "security.token_audience",
            self.token_audience,
            "must not be empty",
        )
        _check(
            0 < self.token_ttl_min <= 24 * 60,
            "security.token_ttl_min",
            self.token_ttl_min,
            "must be > 0 and at most 1440 (a day)",
        )
        for origin in self.allowed_origins:
            _check(
                origin == "*" or bool(_ORIGIN.match(origin)),
                "security.allowed_origins",
                list(self.allowed_origins),
                f"{origin!r} is not '*' or an origin like 'https://app.example:8443'",
            )
        if self.metrics_bind:
            host, sep, port = self.metrics_bind.rpartition(":")
            _check(
                bool(sep and host and port.isdigit() and 0 < int(port) < 65536),
                "security.metrics_bind",
                self.metrics_bind,
                "must be HOST:PORT, e.g. 127.0.0.1:9100",
            )

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None
WEB_PAGE_MODES: Final[tuple[str, ...]] = ("auto", "on", "off")


@dataclass(frozen=True)
class WebSettings:
    """[web]: the talk page (``/talk``), a browser client of ``/v1/stream`` served by
    every gateway."""

    section: ClassVar[str] = "web"

    # auto: served when the node binds to a loopback address (a page on a public address
    # is an open microphone endpoint for anyone who finds it); on | off
    page: str = "auto"

    def __post_init__(self) -> None:
        _check(
            isinstance(self.page, str) and self.page.lower() in WEB_PAGE_MODES,
            "web.page",
            self.page,
            f"must be one of {', '.join(WEB_PAGE_MODES)}",
        )
        object.__setattr__(self, "page", self.page.lower())

    def serves_page(self, host: str) -> bool:
        """Whether a node bound to ``host`` serves the page."""
        if self.page != "auto":
            return self.page == "on"
        return is_loopback(host)


def is_loopback(host: str) -> bool:
    """``host`` names only this machine: localhost or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class NodeConfig:
    """The whole configuration of one node."""

    node: NodeSettings = field(default_factory=NodeSettings)
    rings: RingSettings = field(default_factory=RingSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    web: WebSettings = field(default_factory=WebSettings)
    workers: Mapping[str, WorkerSettings] = field(
        default_factory=lambda: {name: WorkerSettings() for name in STAGES}
    )

    def __post_init__(self) -> None:
        workers = dict(self.workers)
        for name in workers:
            _check(name in STAGES, f"workers.{name}", name, f"unknown stage; stages are {STAGES}")
        for name in STAGES:
            worker = workers.setdefault(name, WorkerSettings())
            if not worker.stage:
                workers[name] = dataclasses.replace(worker, stage=DEFAULT_STAGES[name])
        # Keep pipeline order whatever order the file used.
        object.__setattr__(self, "workers", {name: workers[name] for name in STAGES})
        available = available_cpus()
        for name, worker in self.workers.items():
            _check(
                bool(_IMPORT_PATH.match(worker.stage)),
                f"workers.{name}.stage",
                worker.stage,
                "must be an import path 'package.module:Class'",
            )
            _check_cpus(f"workers.{name}.cpus", worker.cpus, available)
        _check_cpus("gateway.cpus", self.gateway.cpus, available)

    def cpus_for(self, process: str) -> tuple[int, ...]:
        """CPU set of ``process`` (a stage name or "gateway"): configured, else default."""
        configured = self.gateway.cpus if process == "gateway" else self.workers[process].cpus
        return configured or default_cpu_layout(available_cpus())[process]

    @property
    def shm_prefix(self) -> str:
        """Prefix of every shared-memory segment and semaphore of this node."""
        return f"vg-{self.node.name}-"


def _protocol_limits() -> ProtocolLimits:
    # The wire protocol owns its message limits; imported here, when options are built,
    # so that importing the configuration does not import the server.
    from voicegate.server.protocols.native_wire import DEFAULT_LIMITS  # noqa: PLC0415

    return DEFAULT_LIMITS


@dataclass(frozen=True)
class GatewayOptions:
    """What one gateway process runs with: [gateway]'s send path and
    ``limits.max_sessions``, gathered from a ``NodeConfig`` by ``from_config``, so they
    come the one way every setting does (file < ``VOICEGATE_*`` < ``voicegate serve``
    flags, the flags applied to the ``NodeConfig``). Field meanings: ``GatewaySettings``."""

    max_sessions: int = LimitsSettings.max_sessions  # node-wide
    send_queue_frames: int = GatewaySettings.send_queue_frames
    stall_ms: float = GatewaySettings.stall_ms
    lead_ms: float = GatewaySettings.lead_ms
    send_buffer_bytes: int = GatewaySettings.send_buffer_bytes
    unread_limit_ms: float = GatewaySettings.unread_limit_ms
    limits: ProtocolLimits = field(default_factory=_protocol_limits)

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.send_queue_frames < 1:
            raise ValueError(f"send_queue_frames must be >= 1, got {self.send_queue_frames}")

    @classmethod
    def from_config(cls, config: NodeConfig) -> GatewayOptions:
        gateway = config.gateway
        return cls(
            max_sessions=config.limits.max_sessions,
            send_queue_frames=gateway.send_queue_frames,
            stall_ms=gateway.stall_ms,
            lead_ms=gateway.lead_ms,
            send_buffer_bytes=gateway.send_buffer_bytes,
            unread_limit_ms=gateway.unread_limit_ms,
        )


def _check_cpus(key: str, cpus: tuple[int, ...], available: Sequence[int]) -> None:
    _check(len(set(cpus)) == len(cpus), key, list(cpus), "lists a CPU twice")
    missing = sorted(set(cpus) - set(available))
    _check(
        not missing,
        key,
        list(cpus),
        f"CPU {missing} not available to this process (available: {format_cpulist(available)})",
    )


# -- CPU layout -----------------------------------------------------------------------


def available_cpus() -> tuple[int, ...]:
    """CPU ids this process may run on, ascending."""
    return tuple(sorted(os.sched_getaffinity(0)))


def default_cpu_layout(cpus: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Default CPU set of the gateways and of each stage, over the given CPUs.

    The gateways and VAD run on every 20 ms frame of every session but do little per
    frame: they share the first CPU. The heavy stages are paired by when they work: STT
    and TTS rarely overlap (TTS speaks after the transcript is final), while the LLM
    overlaps with both (speculative decoding during speech, token streaming during
    synthesis), so it never shares a CPU with them while there are two or more. On two
    CPUs it joins the gateways and VAD: with the real models, STT, LLM and TTS on one CPU
    queued behind each other (4 sessions: v2v p95 4.6 s, that CPU at 85%, the first
    at 29%); with the LLM beside VAD, 1.5 s.

    - 1 CPU:  everything on it
    - 2 CPUs: {gateway, vad, llm} {stt, tts}
    - 3 CPUs: {gateway, vad} {stt, tts} {llm}
    - 4 CPUs: {gateway, vad} {stt} {llm} {tts}
    - n >= 5: n // 8 CPUs (at least one) for the gateways, one for VAD, the rest split
      between LLM, STT and TTS in that order of priority.
    """
    ids = tuple(sorted(cpus))
    n = len(ids)
    if n == 0:
        raise ValueError("no CPU available")
    if n == 1:
        one = ids[:1]
        return {"gateway": one, "vad": one, "stt": one, "llm": one, "tts": one}
    if n == 2:
        first, second = ids[:1], ids[1:2]
        return {"gateway": first, "vad": first, "llm": first, "stt": second, "tts": second}
    if n == 3:
        return {
            "gateway": ids[:1],
            "vad": ids[:1],
            "stt": ids[1:2],
            "tts": ids[1:2],
            "llm": ids[2:3],
        }
    if n == 4:
        return {
            "gateway": ids[:1],
            "vad": ids[:1],
            "stt": ids[1:2],
            "llm": ids[2:3],
            "tts": ids[3:4],
        }
    gateways = max(1, n // 8)
    rest = n - gateways - 1
    shares = {"llm": rest // 3, "stt": rest // 3, "tts": rest // 3}
    for name in ("llm", "stt", "tts")[: rest % 3]:
        shares[name] += 1
    layout = {"gateway": ids[:gateways], "vad": ids[gateways : gateways + 1]}
    start = gateways + 1
    for name in ("stt", "llm", "tts"):
        layout[name] = ids[start : start + shares[name]]
        start += shares[name]
    return layout


def parse_cpulist(text: str) -> tuple[int, ...]:
    """Parse the Linux cpulist syntax: "0-3,6,8-9"."""
    cpus: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list like '0-3,6'")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError(f"{text!r}: range {part} runs backwards")
        cpus.extend(range(first, last + 1))
    return tuple(cpus)


def format_cpulist(cpus: Sequence[int]) -> str:
    """Inverse of ``parse_cpulist``: (0, 1, 2, 5) -> "0-2,5"."""
    ids = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# -- loading --------------------------------------------------------------------------


def load_config(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read the TOML file (``path``, else $VOICEGATE_CONFIG, else none: defaults), then
    apply ``VOICEGATE_*`` overrides from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = env[CONFIG_ENV]
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("config file", str(path), "not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config file", str(path), f"not valid TOML: {exc}") from None
        sources = {key: str(path) for key in _leaf_keys(data)}
    _apply_env(data, sources, env)
    try:
        return _build_node(data, sources)
    except ConfigError as exc:
        source = sources.get(exc.key) or next(
            (src for key, src in sources.items() if key.startswith(exc.key + ".")), ""
        )
        if exc.source or not source:
            raise
        raise ConfigError(exc.key, exc.value, exc.problem, source) from None


def _leaf_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and not dotted.endswith(".options"):
            keys.extend(_leaf_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def _env_keys() -> dict[str, tuple[str, ...]]:
    """VOICEGATE_* variable name -> path of the key it overrides."""
    keys: dict[str, tuple[str, ...]] = {}
    for section_field in dataclasses.fields(NodeConfig):
        if section_field.name == "workers":
            for stage in STAGES:
                for f in dataclasses.fields(WorkerSettings):
                    if f.name != "options":
                        keys[_env_name("workers", stage, f.name)] = ("workers", stage, f.name)
            continue
        section_type = typing.get_type_hints(NodeConfig)[section_field.name]
        for f in dataclasses.fields(section_type):
            keys[_env_name(section_field.name, f.name)] = (section_field.name, f.name)
    return keys


def _env_name(*path: str) -> str:
    return ENV_PREFIX + "_".join(path).upper()


def _apply_env(data: dict[str, Any], sources: dict[str, str], env: Mapping[str, str]) -> None:
    for var, path in _env_keys().items():
        if var not in env:
            continue
        table = data
        for part in path[:-1]:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ConfigError(".".join(path[: path.index(part) + 1]), table, "must be a table")
        table[path[-1]] = _EnvValue(env[var])
        sources[".".join(path)] = var


class _EnvValue(str):
    """A value that came from the environment: parsed from text by the field's type."""


def _build_node(data: Mapping[str, Any], sources: Mapping[str, str]) -> NodeConfig:
    hints = typing.get_type_hints(NodeConfig)
    known = {f.name for f in dataclasses.fields(NodeConfig)}
    for key in data:
        _check(key in known, key, data[key], f"unknown section; sections are {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name in known:
        if name not in data:
            continue
        table = data[name]
        _check(isinstance(table, Mapping), name, table, "must be a table")
        if name == "workers":
            workers: dict[str, WorkerSettings] = {}
            for stage, worker_table in table.items():
                _check(
                    stage in STAGES,
                    f"workers.{stage}",
                    stage,
                    f"unknown stage; stages are {STAGES}",
                )
                _check(
                    isinstance(worker_table, Mapping),
                    f"workers.{stage}",
                    worker_table,
                    "must be a table",
                )
                workers[stage] = _build(WorkerSettings, worker_table, f"workers.{stage}")
            kwargs[name] = workers
        else:
            kwargs[name] = _build(hints[name], table, name)
    return NodeConfig(**kwargs)


def _build(cls: type[Any], table: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        _check(
            key in fields, f"{where}.{key}", table[key], f"unknown key; keys are {sorted(fields)}"
        )
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in table.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert a TOML value (or environment text) to the field type ``tp``."""
    from_env = isinstance(value, _EnvValue)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        # Only "X | None" is used: an empty environment value or "none" means None.
        inner = next(a for a in args if a is not type(None))
        if from_env and value.strip().lower() in ("", "none"):
            return None
        return _coerce(inner, value, key)
    if tp is bool:
        if from_env:
            text = value.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ConfigError(key, str(value), "must be true or false")
        _check(isinstance(value, bool), key, value, "must be true or false")
        return value
    if tp is int:
        if from_env:
            try:
                return int(value.strip(), 0)
            except ValueError:
                raise ConfigError(key, str(value), "must be an integer") from None
        _check(
            isinstance(value, int) and not isinstance(value, bool), key, value, "must be an integer"
        )
        return value
    if tp is float:
        if from_env:
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(key, str(value), "must be a number") from None
        _check(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            value,
            "must be a number",
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, value, "must be a string")
        return str(value)
    if tp is Path:
        _check(isinstance(value, str), key, value, "must be a path string")
        return Path(value).expanduser()
    if origin is tuple and args == (int, Ellipsis):
        if isinstance(value, str):
            try:
                return parse_cpulist(value)
            except ValueError as exc:
                raise ConfigError(key, str(value), str(exc)) from None
        _check(
            isinstance(value, list)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value),
            key,
            value,
            "must be a list of CPU ids or a CPU list string like '0-3,6'",
        )
        return tuple(value)
    if origin is tuple and args == (str, Ellipsis):
        if isinstance(value, str):  # environment: comma-separated
            return tuple(part.strip() for part in value.split(",") if part.strip())
        _check(
            isinstance(value, list) and all(isinstance(v, str) for v in value),
            key,
            value,
            "must be a list of strings",
        )
        return tuple(value)
    if origin is Mapping or tp is Mapping:
        _check(isinstance(value, Mapping) and not from_env, key, value, "must be a table")
        return dict(value)
    raise TypeError(f"{key}: no conversion for field type {tp!r}")

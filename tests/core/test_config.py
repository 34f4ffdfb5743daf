"""Node configuration: TOML, environment overrides, validation, default CPU layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.core.config import (
    DEFAULT_STAGES,
    STAGES,
    ConfigError,
    GatewayOptions,
    GatewaySettings,
    HealthSettings,
    NodeConfig,
    NodeSettings,
    RingSettings,
    WorkerSettings,
    available_cpus,
    default_cpu_layout,
    format_cpulist,
    load_config,
    parse_cpulist,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voicegate.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    config = load_config(env={})
    assert config == NodeConfig()
    assert list(config.workers) == list(STAGES)
    assert {name: w.stage for name, w in config.workers.items()} == DEFAULT_STAGES
    assert config.shm_prefix == "vg-main-"
    assert config.rings.impl == "native"


def test_file_values_are_read_and_typed(tmp_path: Path) -> None:
    cpus = available_cpus()
    path = write(
        tmp_path,
        f"""
[node]
name = "edge-7"
gateways = 3
drain_timeout_s = 2
bundle = "~/bundles/demo"

[rings]
impl = "reference"
stage_capacity = 65536

[health]
heartbeat_timeout_s = 1.5
max_restarts = 2

[workers.stt]
stage = "pkg.mod:SttStage"
cpus = [{cpus[0]}]

[workers.stt.options]
beam = 4
language = "en"

[gateway]
cpus = "{cpus[0]}"
""",
    )
    config = load_config(path, env={})
    assert config.node.name == "edge-7"
    assert config.node.gateways == 3
    assert config.node.drain_timeout_s == 2.0
    assert isinstance(config.node.drain_timeout_s, float)
    assert config.node.bundle == Path("~/bundles/demo").expanduser()
    assert config.rings.impl == "reference"
    assert config.rings.stage_capacity == 65536
    assert config.health.heartbeat_timeout_s == 1.5
    assert config.health.max_restarts == 2
    stt = config.workers["stt"]
    assert stt.stage == "pkg.mod:SttStage"
    assert stt.cpus == (cpus[0],)
    assert stt.options == {"beam": 4, "language": "en"}
    assert config.workers["vad"] == WorkerSettings(stage=DEFAULT_STAGES["vad"])
    assert config.gateway.cpus == (cpus[0],)
    assert config.cpus_for("stt") == (cpus[0],)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nname = "a"\ngateways = 2\n')
    env = {
        "VOICEGATE_NODE_GATEWAYS": "4",
        "VOICEGATE_HEALTH_HEARTBEAT_TIMEOUT_S": "2.5",
        "VOICEGATE_RINGS_IMPL": "reference",
        "VOICEGATE_WORKERS_TTS_STAGE": "x.y:Z",
        "VOICEGATE_WORKERS_TTS_CPUS": str(available_cpus()[0]),
        "VOICEGATE_NODE_BUNDLE": "/opt/bundle",
        "VOICEGATE_DEBUG": "1",  # not a configuration key: left alone
    }
    config = load_config(path, env=env)
    assert config.node.name == "a"
    assert config.node.gateways == 4
    assert config.health.heartbeat_timeout_s == 2.5
    assert config.rings.impl == "reference"
    assert config.workers["tts"].stage == "x.y:Z"
    assert config.workers["tts"].cpus == (available_cpus()[0],)
    assert config.node.bundle == Path("/opt/bundle")


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nname = "from-env"\n')
    assert load_config(env={"VOICEGATE_CONFIG": str(path)}).node.name == "from-env"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('[node]\nname = "Bad Name"\n', "node.name", "Bad Name"),
        ("[node]\ngateways = 0\n", "node.gateways", 0),
        ("[node]\ngateways = 300\n", "node.gateways", 300),
        ('[node]\ngateways = "two"\n', "node.gateways", "two"),
        ("[node]\ngateways = true\n", "node.gateways", True),
        ('[node]\nprovider = "tpu"\n', "node.provider", "tpu"),
        ("[node]\nbogus = 1\n", "node.bogus", 1),
        ("[rings]\nstage_capacity = 5000\n", "rings.stage_capacity", 5000),
        ('[rings]\nimpl = "fast"\n', "rings.impl", "fast"),
        ("[health]\nheartbeat_timeout_s = -1\n", "health.heartbeat_timeout_s", -1.0),
        ("[health]\nrestart_backoff_max_s = 0.01\n", "health.restart_backoff_max_s", 0.01),
        ("[workers.asr]\ncpus = [0]\n", "workers.asr", "asr"),
        ('[workers.llm]\nstage = "no colon"\n', "workers.llm.stage", "no colon"),
        ("[workers.llm]\ncpus = [100000]\n", "workers.llm.cpus", [100000]),
        ("[workers.llm]\ncpus = [0, 0]\n", "workers.llm.cpus", [0, 0]),
        ('[workers.llm]\ncpus = "3-1"\n', "workers.llm.cpus", "3-1"),
        ("[extra]\nx = 1\n", "extra", {"x": 1}),
        ("[gateway]\nsend_queue_frames = 0\n", "gateway.send_queue_frames", 0),
        ("[gateway]\nsend_queue_frames = 2.5\n", "gateway.send_queue_frames", 2.5),
        ("[gateway]\nstall_ms = 0\n", "gateway.stall_ms", 0.0),
        ("[gateway]\nlead_ms = -1\n", "gateway.lead_ms", -1.0),
        ("[gateway]\nsend_buffer_bytes = -4096\n", "gateway.send_buffer_bytes", -4096),
        ('[gateway]\nunread_limit_ms = "2s"\n', "gateway.unread_limit_ms", "2s"),
        ("node = 3\n", "node", 3),
    ],
)
def test_bad_values_name_key_value_and_file(
    tmp_path: Path, text: str, key: str, value: object
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key
    assert info.value.value == value
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"VOICEGATE_HEALTH_MAX_RESTARTS": "many"})
    assert info.value.key == "health.max_restarts"
    assert info.value.source == "VOICEGATE_HEALTH_MAX_RESTARTS"
    assert "VOICEGATE_HEALTH_MAX_RESTARTS" in str(info.value)
    with pytest.raises(ConfigError, match=r"health\.heartbeat_interval_s"):
        load_config(env={"VOICEGATE_HEALTH_HEARTBEAT_INTERVAL_S": "0"})


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[node\n"), env={})


def test_sections_validate_when_built_in_code() -> None:
    with pytest.raises(ConfigError, match=r"health\.heartbeat_timeout_s"):
        HealthSettings(heartbeat_interval_s=1.0, heartbeat_timeout_s=1.5)
    with pytest.raises(ConfigError, match=r"rings\.control_capacity"):
        RingSettings(control_capacity=1000)
    with pytest.raises(ConfigError, match=r"node\.stop_timeout_s"):
        NodeSettings(stop_timeout_s=0)
    with pytest.raises(ConfigError, match=r"workers\.vad\.stage"):
        NodeConfig(workers={"vad": WorkerSettings(stage="vad")})
    config = dataclasses.replace(NodeConfig(), node=NodeSettings(name="x1"))
    assert config.shm_prefix == "vg-x1-"


def test_cpulist_round_trip() -> None:
    assert parse_cpulist("0-3,6,8-9") == (0, 1, 2, 3, 6, 8, 9)
    assert parse_cpulist(" 5 ") == (5,)
    assert format_cpulist((0, 1, 2, 3, 6, 8, 9)) == "0-3,6,8-9"
    assert format_cpulist((4,)) == "4"
    for bad in ("a", "1-", "-1", "2-1", "1-b"):
        with pytest.raises(ValueError):
            parse_cpulist(bad)


def test_default_layout_small_machines() -> None:
    assert default_cpu_layout([0]) == dict.fromkeys(["gateway", "vad", "stt", "llm", "tts"], (0,))
    assert default_cpu_layout([0, 1]) == {
        "gateway": (0,),
        "vad": (0,),
        "llm": (0,),
        "stt": (1,),
        "tts": (1,),
    }
    assert default_cpu_layout([4, 2, 7]) == {
        "gateway": (2,),
        "vad": (2,),
        "stt": (4,),
        "tts": (4,),
        "llm": (7,),
    }
    four = default_cpu_layout(range(4))
    assert [four[p] for p in ("gateway", "vad", "stt", "llm", "tts")] == [
        (0,),
        (0,),
        (1,),
        (2,),
        (3,),
    ]
    with pytest.raises(ValueError):
        default_cpu_layout([])


@pytest.mark.parametrize("n", range(5, 65))
def test_default_layout_large_machines_uses_every_cpu_once(n: int) -> None:
    cpus = list(range(100, 100 + n))
    layout = default_cpu_layout(cpus)
    assigned = [cpu for cpus_of in layout.values() for cpu in cpus_of]
    assert sorted(assigned) == cpus  # disjoint and complete
    assert len(layout["vad"]) == 1
    assert len(layout["gateway"]) == max(1, n // 8)
    heavy = [len(layout[s]) for s in ("llm", "stt", "tts")]
    assert max(heavy) - min(heavy) <= 1
    assert len(layout["llm"]) == max(heavy)


def test_cpus_for_falls_back_to_default_layout() -> None:
    config = NodeConfig()
    layout = default_cpu_layout(available_cpus())
    for process in ("gateway", *STAGES):
        assert config.cpus_for(process) == layout[process]


# -- the gateway's send path: [gateway] in the file, VOICEGATE_GATEWAY_*, GatewayOptions


def test_gateway_options_default_to_the_gateway_section() -> None:
    options = GatewayOptions.from_config(load_config(env={}))
    assert options == GatewayOptions()
    settings = GatewaySettings()
    assert (
        options.send_queue_frames,
        options.stall_ms,
        options.lead_ms,
        options.send_buffer_bytes,
        options.unread_limit_ms,
    ) == (100, 200.0, 300.0, 0, 2000.0)
    assert options.stall_ms == settings.stall_ms
    assert options.max_sessions == NodeConfig().limits.max_sessions


def test_gateway_options_come_from_the_file_then_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
send_queue_frames = 20
stall_ms = 150
lead_ms = 0
send_buffer_bytes = 16384
unread_limit_ms = 900.5

[limits]
max_sessions = 7
""",
    )
    from_file = GatewayOptions.from_config(load_config(path, env={}))
    assert from_file == GatewayOptions(
        max_sessions=7,
        send_queue_frames=20,
        stall_ms=150.0,
        lead_ms=0.0,
        send_buffer_bytes=16384,
        unread_limit_ms=900.5,
    )
    assert isinstance(from_file.stall_ms, float)
    env = {
        "VOICEGATE_GATEWAY_SEND_QUEUE_FRAMES": "0x40",
        "VOICEGATE_GATEWAY_STALL_MS": "75.5",
        "VOICEGATE_GATEWAY_UNREAD_LIMIT_MS": "3000",
        "VOICEGATE_LIMITS_MAX_SESSIONS": "9",
    }
    config = load_config(path, env=env)
    options = GatewayOptions.from_config(config)
    # The environment wins where it speaks; the file keeps the rest.
    assert (options.send_queue_frames, options.stall_ms, options.unread_limit_ms) == (
        64,
        75.5,
        3000.0,
    )
    assert (options.lead_ms, options.send_buffer_bytes, options.max_sessions) == (0.0, 16384, 9)


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("VOICEGATE_GATEWAY_SEND_QUEUE_FRAMES", "lots"),
        ("VOICEGATE_GATEWAY_SEND_QUEUE_FRAMES", "0"),
        ("VOICEGATE_GATEWAY_STALL_MS", "-5"),
        ("VOICEGATE_GATEWAY_LEAD_MS", "soon"),
        ("VOICEGATE_GATEWAY_SEND_BUFFER_BYTES", "1.5"),
        ("VOICEGATE_GATEWAY_UNREAD_LIMIT_MS", "0"),
    ],
)
def test_bad_gateway_environment_value_names_variable_and_key(
    tmp_path: Path, var: str, text: str
) -> None:
    path = write(tmp_path, "[gateway]\nstall_ms = 100\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={var: text})
    key = "gateway." + var.removeprefix("VOICEGATE_GATEWAY_").lower()
    assert info.value.key == key
    assert info.value.source == var
    assert f"{key} = " in str(info.value)
    assert var in str(info.value)


@given(
    stall_ms=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False),
    frames=st.integers(min_value=1, max_value=10**6),
)
def test_gateway_environment_numbers_round_trip(stall_ms: float, frames: int) -> None:
    env = {
        "VOICEGATE_GATEWAY_STALL_MS": repr(stall_ms),
        "VOICEGATE_GATEWAY_SEND_QUEUE_FRAMES": f" {frames} ",
    }
    options = GatewayOptions.from_config(load_config(env=env))
    assert options.stall_ms == stall_ms
    assert options.send_queue_frames == frames


def test_gateway_options_carry_the_wire_protocols_limits() -> None:
    from voicegate.server.protocols.native_wire import DEFAULT_LIMITS  # noqa: PLC0415

    assert GatewayOptions().limits is DEFAULT_LIMITS
    with pytest.raises(ValueError, match="send_queue_frames"):
        GatewayOptions(send_queue_frames=0)

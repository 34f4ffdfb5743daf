# ruff: noqa: E501 - strategies read best on one line
"""Every parser of what crosses a process boundary, fed anything (hypothesis): it returns
a value or raises its one documented error (ValueError, ConfigError), never another
exception that would end a worker, a gateway or the CLI with a traceback."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate.core.config import ConfigError, HealthSettings, LimitsSettings, load_config
from voicegate.core.payloads import DrainEvent, SessionParams, TurnError, VadEvent, WorkerRestarted

PAYLOADS = (TurnError, VadEvent, WorkerRestarted, DrainEvent)


@given(st.sampled_from(PAYLOADS), st.binary(max_size=64))
def test_record_payloads_parse_or_raise_value_error(kind: type, payload: bytes) -> None:
    try:
        value = kind.unpack(payload)  # type: ignore[attr-defined]
    except ValueError:
        return
    assert kind.unpack(value.pack()) == value  # type: ignore[attr-defined]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
open_docs = st.fixed_dictionaries(
    {},
    optional={
        "input": json_values | st.fixed_dictionaries({"encoding": st.sampled_from(["pcm16", "mulaw", "x"]), "sample_rate": json_values}),
        "output": json_values,
        "instructions": json_values,
    },
)


@given(st.binary(max_size=200) | open_docs.map(lambda d: json.dumps(d).encode()))
def test_session_open_payloads_never_raise_in_a_stage(payload: bytes) -> None:
    params, problem = SessionParams.unpack_or_default(payload)
    assert params.input.sample_rate > 0
    assert problem is None or isinstance(problem, str)


LIMIT_KEYS = [f.name for f in dataclasses.fields(LimitsSettings)]


@settings(max_examples=200)
@given(st.sampled_from([*LIMIT_KEYS, "stopped_timeout_s"]), st.text(max_size=12))
def test_limit_settings_from_the_environment_load_or_name_the_variable(
    key: str, text: str
) -> None:
    section = "HEALTH" if key == "stopped_timeout_s" else "LIMITS"
    var = f"VOICEGATE_{section}_{key.upper()}"
    try:
        config = load_config(None, {var: text})
    except ConfigError as exc:
        assert var in str(exc) or key in str(exc)
        return
    settings_ = config.health if section == "HEALTH" else config.limits
    assert isinstance(settings_, HealthSettings | LimitsSettings)
    assert getattr(settings_, key) > 0

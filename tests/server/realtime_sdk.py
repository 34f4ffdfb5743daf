"""Validation of server events against the ``openai`` SDK's own pydantic types."""

from __future__ import annotations

from collections.abc import Mapping

from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

_SERVER_EVENT: TypeAdapter[RealtimeServerEvent] = TypeAdapter(RealtimeServerEvent)
# What the SDK's request-shaped session types lack but OpenAI's own server sends too.
_SESSION_EXTRAS = frozenset({"id", "object", "expires_at"})


def sdk_event(event: Mapping[str, object]) -> BaseModel:
    """The SDK's model of ``event``, validated (the SDK itself parses without validating),
    with no field the SDK does not know anywhere in it."""
    model = _SERVER_EVENT.validate_python(dict(event))
    assert isinstance(model, BaseModel)
    _no_extras(model, "")
    return model


def _no_extras(model: BaseModel, path: str) -> None:
    extra = set(model.model_extra or {})
    if path.endswith("session"):
        extra -= _SESSION_EXTRAS
    assert not extra, f"fields the SDK does not know at {path or 'top'}: {sorted(extra)}"
    for name in type(model).model_fields:
        _walk(getattr(model, name), f"{path}.{name}" if path else name)


def _walk(value: object, path: str) -> None:
    if isinstance(value, BaseModel):
        _no_extras(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]")

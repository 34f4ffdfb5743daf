"""A stage without a model: forwards every record, appending a tag to its payload.

It runs the whole process topology with no model bundle: the runtime's tests and the
restart benchmark use it, and it is the default of every stage until the model-backed
stages are configured. With the default tags a frame sent by a gateway comes back with
``|vad|stt|llm|tts`` appended, which proves it crossed every stage in order.

Options ([workers.<stage>.options]):
    tag   text appended to each forwarded payload; default "|<stage>"; "" forwards as is
"""

from __future__ import annotations

from collections.abc import Mapping

from voicegate.core.config import ConfigError
from voicegate.workers.stage import Batch, Output, Stage, StageContext

_OPTIONS = ("tag",)


class PassThroughStage(Stage[None]):
    def __init__(self, context: StageContext) -> None:
        super().__init__(context)
        prefix = f"workers.{context.name}.options"
        for key in context.options:
            if key not in _OPTIONS:
                raise ConfigError(f"{prefix}.{key}", context.options[key], "unknown option")
        tag = context.options.get("tag", f"|{context.name}")
        if not isinstance(tag, str):
            raise ConfigError(f"{prefix}.tag", tag, "must be a string")
        self.tag = tag.encode()

    def open_session(self, session: int, turn: int, params: memoryview) -> None:
        return None

    def on_records(self, batch: Batch, states: Mapping[int, None], out: Output) -> None:
        tag = self.tag
        for m in batch:
            out.emit(m.replace(payload=bytes(m.payload) + tag))

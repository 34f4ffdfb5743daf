"""Stage modules under the names they had before the layout of issue #14, so that
a node configuration written then (``stage = "voicegate.workers.vad_stage:VadStage"``)
still loads: ``load_stage_class`` reads an old module name as its new one."""

from __future__ import annotations

from typing import Final

RENAMED_STAGE_MODULES: Final[dict[str, str]] = {
    "voicegate.workers.audio_history": "voicegate.workers.stages.audio_history",
    "voicegate.workers.llm_stage": "voicegate.workers.stages.llm",
    "voicegate.workers.partial_shedding": "voicegate.workers.stages.partial_shedding",
    "voicegate.workers.passthrough": "voicegate.workers.stages.passthrough",
    "voicegate.workers.stage": "voicegate.workers.stages.stage",
    "voicegate.workers.stage_support": "voicegate.workers.stages.support",
    "voicegate.workers.stt_stage": "voicegate.workers.stages.stt",
    "voicegate.workers.tts_stage": "voicegate.workers.stages.tts",
    "voicegate.workers.turn_taking": "voicegate.workers.stages.turn_taking",
    "voicegate.workers.vad_stage": "voicegate.workers.stages.vad",
}

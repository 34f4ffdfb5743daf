"""voicegate.workers: the pinned worker processes of a node and their supervisor.

Modules:
    runtime/  The worker processes of a node, their rings and status blocks, and the supervisor
              that starts, watches and replaces them
    stages/   The pipeline stages a worker runs (VAD, STT, LLM, TTS and a pass-through), the Stage
              class they implement and their turn policy

Run a node: ``python -m voicegate.workers --config node.toml``.

Decisions worth knowing:

- Topology (docs/pipeline.md): gateway i -> vad, vad -> stt -> llm -> tts, tts -> gateway i, and
  supervisor -> gateway i for control (WORKER_RESTARTED, DRAIN). The supervisor owns every
  ring, so a worker's death never removes one; its replacement attaches to the same rings.
- Routing back to gateways: a session id's top 8 bits are its gateway's index
  (``voicegate.core.kinds.session_id``), so the last stage needs no session table to route.
- Sessions after a restart: a replacement starts with an empty session table and drops
  records of sessions it does not know. On WORKER_RESTARTED every gateway fails the turn
  in flight of each session (error event) and sends SESSION_OPEN again with
  ``Flag.REOPEN`` and the next turn: the replacement learns the session from it, the other
  stages keep their session state and only move to the new turn, whose id makes every
  record of the failed turn stale all along the pipeline.
- Ring wait: the ring writes the publish time into each record's header (``sent_ns``,
  docs/ring.md), so each consumer measures per record how long it waited in the ring;
  compute time is the duration of the stage call that handled the record.
- CPU pinning: ``voicegate.core.config.default_cpu_layout``; on 2 CPUs, CPU 0 runs the
  gateways and VAD (the per-frame work), CPU 1 runs STT, the LLM and TTS.
"""

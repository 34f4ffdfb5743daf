"""voicegate.workers: the pinned worker processes of a node and their supervisor.

Modules:
    stage         the Stage base class a pipeline stage implements, and Record/Output
    worker        the runtime loop that drives a Stage between its rings
    process       the body of a spawned worker process
    supervisor    builds the node's shared memory, starts, watches and replaces workers
    topology      names of every ring and status block, from the configuration
    status        per-process status blocks: state, heartbeat, counters, histograms
    metrics       reading every status block of a node from any process
    gateway_link  a gateway process's end of the rings
    passthrough   a stage without a model, for the process skeleton and its tests
    rings         choosing the ring implementation
    procinfo      Linux process facts: identity, liveness, pinning, parent death

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

"""voicegate.core: what every process of a node shares, and nothing that imports the
other parts: the clock, configuration, logging, record kinds and payloads, the
shared-memory layout, audio and text helpers.

Modules:
    audio        Audio sample utilities: PCM16 <-> float32 and soxr resampling
    clock        The one clock every process compares: CLOCK_MONOTONIC in integer nanoseconds
    codec        Wire audio formats: encodings, sample rates, frame sizes and G.711 mu-law and
                 A-law
    config       Node configuration: one TOML file, then ``VOICEGATE_*`` environment overrides
    config_show  The effective configuration as TOML, each value marked with where it came from
    kinds        Message kinds, record flags and session ids
    layout       The one definition of the shared-memory layouts: ring control block and record
                 header
    log_limit    Rate-limited logging for what callers can cause
    logs         Logging setup: plain text or JSON lines, session ids on every record, and a guard
                 that keeps audio and transcripts out of the logs
    payloads     Payload codecs: one encoder and one decoder for every record kind that carries a
                 payload
    speakable    What of a model's text a voice can say: markdown, emoji and symbols taken out
    speech_text  Text as it is spoken: numbers, money, times, dates, ordinals and common
                 abbreviations written out in words before a voice phonemizes them
    text         Clause chunking of streamed reply text for text-to-speech
    toml_text    Writing TOML: the standard library reads it (tomllib) but does not write it
    wav          Reading and writing 16-bit PCM mono WAV files
"""

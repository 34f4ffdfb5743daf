"""voicegate.models: the ONNX engines of the four pipeline stages and their bundles.

Stage engines (plain Python over onnxruntime, each usable on its own and by its worker;
each serves many sessions in batched calls):

- ``vad``: Silero VAD v5, per-session state, speech start/end decisions.
- ``stt``: Whisper in the optimum layout, log-mel front end (``melspec``), batched
  encoder, greedy decoding with a KV cache, streaming partial transcripts; its tokenizer
  files are made and read by ``whisper_tokenizer``.
- ``llm``: a decoder-only model in the optimum layout with per-session KV caches,
  continuous batching, sampling, stop sequences and prefix KV reuse; its tokenizer is in
  ``sp_tokenizer``.
- ``tts``: Piper (VITS) voices, clause by clause, resampled per session.
- ``sessions``: the engines' per-caller session lookups.

Bundles and tools:

- ``bundle``: bundle.toml, the directory format naming each stage's files and parameters,
  and ``TableReader``, the typed reader of its tables; ``json_fields``: typed reads of
  the JSON side files (Hugging Face and Piper configs).
- ``synth``: writes a complete bundle with seeded random or scripted weights
  (graphs built by ``llm_graph``, ``stt_graph``, ``tts_graph`` on the shared
  ``onnx_builder``).
- ``check``: validates any bundle and times one call per model.
- ``cli``: the ``voicegate models synth`` and ``voicegate models check`` commands.
- ``runtime``, ``spec``, ``errors``: execution providers and sessions, declared tensor
  interfaces, and the error that names the file and tensor at fault.
"""

"""voicegate.models.graphs: the ONNX graphs voicegate builds itself: the generated
test models of ``synth`` and the graphs the importers fill with real weights.

Modules:
    builder  A small helper for writing ONNX graphs node by node with seeded random weights
    llama    ONNX decoder graphs for Llama-family weights (llama, qwen2)
    llm      ONNX graphs in the layout optimum exports for decoder-only models
    stt      ONNX graphs in the layout Hugging Face optimum exports Whisper to
    synth    Write a complete model bundle: every stage's files and the bundle.toml naming them
    tts      ONNX graphs with Piper's (VITS) interface
"""

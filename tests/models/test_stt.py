"""The Whisper engine through real onnxruntime sessions, tokenizers and KV caches.

Exact text comes from the scripted bundle: its decoder spells a fixed transcript, one
token per 160 ms of audio in the window (so partials grow as a real model's do), and
counts its position from markers in the self-attention cache, so a broken cache shows up
as wrong text. The random-weight bundle checks that batching and caching change nothing.
"""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from voicegate.models import melspec, stt
from voicegate.models.errors import BundleError
from voicegate.models.runtime import create_session

SCRIPT = "What time does the store open tomorrow?"
SAMPLES_PER_TOKEN = 8 * 2 * melspec.HOP_LENGTH  # 8 encoder positions of 2 mel frames


def speech_dir() -> Path:
    override = os.environ.get("VOICEGATE_SPEECH_DIR")
    folder = (Path(override) if override
              else Path(__file__).resolve().parents[2].parent / "shared" / "speech")
    if not (folder / "manifest.json").is_file():
        pytest.fail(f"speech samples not found in {folder} (set VOICEGATE_SPEECH_DIR)")
    return folder


def load_speech(name: str) -> tuple[np.ndarray, dict[str, Any]]:
    folder = speech_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(u for u in manifest["utterances"] if u["file"] == name)
    with wave.open(str(folder / name)) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0), entry


@pytest.fixture(scope="session")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("stt_scripted")
    return stt.synth(base, seed=7, scripted=SCRIPT), base


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("stt_random")
    return stt.synth(base, seed=7), base


@pytest.fixture(scope="session")
def scripted_engine(scripted: tuple[dict[str, Any], Path]) -> stt.SttEngine:
    return stt.SttEngine.from_table(*scripted)


def script_tokens(engine: stt.SttEngine) -> list[int]:
    ids: list[int] = engine.model.tokenizer.encode(" " + SCRIPT, add_special_tokens=False).ids
    return ids


def allowance(audio: np.ndarray, n_script: int) -> int:
    """How many script tokens the scripted model may spell for this window, computed
    here from the features: encoder positions whose two mel frames rise above the
    window's floor, one token per 8 of them."""
    feats = melspec.input_features(audio)
    live = (feats > feats.min() + 1e-4).any(axis=0).reshape(1500, 2).any(axis=1)
    return min(n_script, int(live.sum()) // 8)


def test_synth_writes_the_optimum_layout(scripted: tuple[dict[str, Any], Path]) -> None:
    table, base = scripted
    folder = base / "stt"
    names = {p.name for p in folder.iterdir()}
    assert {"encoder_model.onnx", "decoder_model_merged.onnx", "tokenizer.json", "config.json",
            "generation_config.json"} <= names
    decoder = onnx.load(str(folder / "decoder_model_merged.onnx"))
    inputs = [i.name for i in decoder.graph.input]
    assert inputs[:2] == ["input_ids", "encoder_hidden_states"]
    assert inputs[-1] == "use_cache_branch"
    assert "past_key_values.1.encoder.value" in inputs
    assert [o.name for o in decoder.graph.output][:3] == [
        "logits", "present.0.decoder.key", "present.0.decoder.value"]
    generation = json.loads((folder / "generation_config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    # Whisper's order: <|endoftext|> right after the BPE vocabulary, then SOT, languages.
    assert added["<|startoftranscript|>"] == added["<|endoftext|>"] + 1
    assert added["<|en|>"] == added["<|startoftranscript|>"] + 1
    assert generation["decoder_start_token_id"] == added["<|startoftranscript|>"]
    assert generation["forced_decoder_ids"] == [
        [1, added["<|en|>"]], [2, added["<|transcribe|>"]], [3, added["<|notimestamps|>"]]]
    assert table["encoder"] == "stt/encoder_model.onnx"


def test_with_past_branch_returns_empty_cross_attention_presents(
    scripted_engine: stt.SttEngine,
) -> None:
    """As optimum's merge does: the cross-attention cache of the first step stays in use,
    the with-past branch gives back empty [0, H, 1, hd] tensors in its place."""
    model = scripted_engine.model
    hidden = model.encode(model.features([np.ones(16000, dtype=np.float32) * 0.1]))
    logits, cache = model.decode_start(hidden)
    feeds = {"input_ids": logits.argmax(axis=1).reshape(1, 1), "encoder_hidden_states": hidden,
             "use_cache_branch": np.ones(1, dtype=bool), **cache}
    outputs = dict(zip(model.decoder.output_names, model.decoder.session.run(None, feeds),
                       strict=True))
    assert outputs["present.0.encoder.key"].shape == (0, model.n_heads, 1, model.head_dim)
    assert outputs["present.1.decoder.value"].shape[2] == len(model.prompt) + 1
    assert cache["past_key_values.0.encoder.key"].shape == (1, model.n_heads, 1500, model.head_dim)


def test_engine_prompt_is_the_forced_start(scripted_engine: stt.SttEngine) -> None:
    tok = scripted_engine.model.tokenizer
    assert [tok.id_to_token(i) for i in scripted_engine.model.prompt] == [
        "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def test_final_transcript_of_a_recorded_utterance_is_exact(
    scripted_engine: stt.SttEngine,
) -> None:
    audio, entry = load_speech("00_store_hours.wav")
    engine = scripted_engine
    engine.open_session(1)
    try:
        for start in range(0, audio.size, 320):  # 20 ms frames
            engine.feed(1, audio[start : start + 320])
        engine.end_utterance(1)
        (final,) = engine.step()
    finally:
        engine.close_session(1)
    assert final.final and final.endpoint and final.session == 1
    assert final.text == SCRIPT == entry["text"]
    assert final.stable_text == final.text
    assert final.audio_samples == audio.size


def test_partials_grow_and_stable_prefix_is_shared_by_two_hypotheses(
    scripted_engine: stt.SttEngine,
) -> None:
    audio, entry = load_speech("00_store_hours.wav")
    engine = scripted_engine
    script = script_tokens(engine)
    interval = engine.params.partial_interval_ms * 16
    engine.open_session(5)
    events: list[stt.Transcript] = []
    try:
        for start in range(0, audio.size, 320):
            engine.feed(5, audio[start : start + 320])
            events += engine.step()
        engine.end_utterance(5)
        events += engine.step()
        assert not engine.pending()
    finally:
        engine.close_session(5)
    partials = [e for e in events if not e.final]
    assert len(partials) == audio.size // interval
    previous: list[int] | None = None
    for event in partials:
        assert event.audio_samples % interval == 0
        expected = script[: allowance(audio[: event.audio_samples], len(script))]
        assert list(event.tokens) == expected
        shared = 0
        if previous is not None:
            while shared < min(len(previous), len(expected)) and (
                previous[shared] == expected[shared]
            ):
                shared += 1
        assert event.stable_tokens == shared
        assert event.stable_text == engine.model.text(expected[:shared])
        previous = expected
    assert any(0 < len(e.tokens) < len(script) for e in partials)  # it really grew
    assert events[-1].final and events[-1].text == entry["text"]


def test_sessions_decode_together_and_each_gets_its_own_text(
    scripted_engine: stt.SttEngine,
) -> None:
    """Three utterances of different lengths in one batch: rows finish at different
    steps; finished rows run on until half the batch is done, then leave the KV caches."""
    audio, _ = load_speech("00_store_hours.wav")
    engine = scripted_engine
    script = script_tokens(engine)
    cuts = {11: 8000 + 4 * SAMPLES_PER_TOKEN, 12: audio.size, 13: 8000 + 2 * SAMPLES_PER_TOKEN}
    for sid, cut in cuts.items():
        engine.open_session(sid)
        engine.feed(sid, audio[:cut])
        engine.end_utterance(sid)
    try:
        batched = {e.session: e for e in engine.step(max_batch=8)}
    finally:
        for sid in cuts:
            engine.close_session(sid)
    single = engine.model.transcribe([audio[:cut] for cut in cuts.values()])
    for (sid, cut), alone in zip(cuts.items(), single, strict=True):
        expected = script[: allowance(audio[:cut], len(script))]
        assert list(batched[sid].tokens) == expected == alone
    assert len({len(e.tokens) for e in batched.values()}) == 3


def test_a_broken_cache_breaks_the_scripted_text(scripted_engine: stt.SttEngine) -> None:
    audio, _ = load_speech("00_store_hours.wav")
    model = scripted_engine.model
    hidden = model.encode(model.features([audio]))
    logits, cache = model.decode_start(hidden)
    first = int(logits.argmax())
    good, _ = model.decode_step(np.asarray([first]), hidden, cache)
    stale = {k: (v[:, :, :-1] if ".decoder." in k else v) for k, v in cache.items()}
    bad, _ = model.decode_step(np.asarray([first]), hidden, stale)
    assert int(good.argmax()) == script_tokens(scripted_engine)[1]
    assert int(bad.argmax()) != int(good.argmax())


def test_window_overflow_emits_a_final_and_continues(scripted_engine: stt.SttEngine) -> None:
    engine = scripted_engine
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(melspec.N_SAMPLES + 16000)).astype(np.float32)
    engine.open_session(21)
    try:
        engine.feed(21, audio)
        first = engine.step()
        assert [e.final for e in first] == [True]
        assert first[0].audio_samples == melspec.N_SAMPLES
        assert first[0].text == SCRIPT and not first[0].endpoint
        assert engine.buffered_samples(21) == 16000
        engine.end_utterance(21)
        (second,) = engine.step()
        assert second.final and second.endpoint and second.audio_samples == 16000
    finally:
        engine.close_session(21)


def test_empty_utterance_and_cancel(scripted_engine: stt.SttEngine) -> None:
    engine = scripted_engine
    engine.open_session(31)
    try:
        engine.end_utterance(31)
        (event,) = engine.step()
        assert event.final and event.text == "" and event.tokens == ()
        engine.feed(31, np.ones(16000, dtype=np.float32) * 0.1)
        engine.cancel_utterance(31)
        assert engine.buffered_samples(31) == 0 and not engine.pending()
        with pytest.raises(KeyError, match="already open"):
            engine.open_session(31)
    finally:
        engine.close_session(31)
    with pytest.raises(KeyError, match="not open"):
        engine.feed(31, np.zeros(10, dtype=np.float32))


def test_random_model_batched_equals_unbatched_and_cache_equals_recompute(
    random_bundle: tuple[dict[str, Any], Path],
) -> None:
    engine = stt.SttEngine.from_table(*random_bundle)
    model = engine.model
    rng = np.random.default_rng(2)
    audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 24000, 9000)]
    hidden = model.encode(model.features(audios))
    for i, audio in enumerate(audios):
        alone = model.encode(model.features([audio]))
        np.testing.assert_allclose(hidden[i : i + 1], alone, rtol=1e-4, atol=1e-4)
    batched = model.generate(hidden)
    assert batched == [model.generate(hidden[i : i + 1])[0] for i in range(3)]
    # The same tokens by re-running the first-step branch on the whole sequence each
    # time, which uses no cache at all.
    session = create_session(random_bundle[1] / random_bundle[0]["decoder"])
    zeros = model._empty_past(1)
    for row, tokens in enumerate(batched):
        sequence = list(model.prompt)
        for token in tokens:
            feeds = {"input_ids": np.asarray([sequence]), "use_cache_branch": np.zeros(1, bool),
                     "encoder_hidden_states": hidden[row : row + 1], **zeros}
            logits = session.run(["logits"], feeds)[0][0, -1]
            scores = np.where(np.isin(np.arange(logits.size), model.suppress), -np.inf, logits)
            if len(sequence) == len(model.prompt):
                scores[model.begin_suppress] = -np.inf
            scores[model.vocab_limit :] = -np.inf
            assert int(scores.argmax()) == token
            sequence.append(token)
    assert all(len(t) == random_bundle[0]["max_new_tokens"] for t in batched)


def test_check_reports_both_models(scripted: tuple[dict[str, Any], Path]) -> None:
    reports = stt.check(*scripted)
    assert [r.file.name for r in reports] == ["encoder_model.onnx", "decoder_model_merged.onnx"]
    assert reports[0].inputs == [("input_features", "tensor(float)", "[batch_size, 80, 3000]")]
    assert reports[1].parameters["layers"] == 2
    assert all(r.call_ms is not None and r.call_ms >= 0 for r in reports)


def _copy_bundle(src: tuple[dict[str, Any], Path], dst: Path) -> tuple[dict[str, Any], Path]:
    table, base = src
    (dst / "stt").mkdir(parents=True)
    for path in (base / "stt").iterdir():
        (dst / "stt" / path.name).write_bytes(path.read_bytes())
    return dict(table), dst


def test_check_rejects_renamed_input_missing_file_and_wrong_dtype(
    scripted: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    table, base = _copy_bundle(scripted, tmp_path / "renamed")
    path = base / "stt" / "decoder_model_merged.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["use_cache" if n == "use_cache_branch" else n for n in node.input]
    next(i for i in model.graph.input if i.name == "use_cache_branch").name = "use_cache"
    onnx.save(model, str(path))
    with pytest.raises(BundleError, match="missing input; tensor 'use_cache_branch'") as err:
        stt.check(table, base)
    assert err.value.file == str(path)

    table, base = _copy_bundle(scripted, tmp_path / "missing")
    (base / "stt" / "tokenizer.json").unlink()
    with pytest.raises(BundleError,
                       match=r"tokenizer.json: file not found \(named by field \[stt\] tokenizer"):
        stt.check(table, base)

    table, base = _copy_bundle(scripted, tmp_path / "dtype")
    path = base / "stt" / "decoder_model_merged.onnx"
    model = onnx.load(str(path))
    graph_input = next(i for i in model.graph.input if i.name == "input_ids")
    graph_input.type.tensor_type.elem_type = onnx.TensorProto.INT32
    onnx.save(model, str(path))
    with pytest.raises(BundleError, match="wrong dtype of input") as err:
        stt.check(table, base)
    assert err.value.tensor == "input_ids"
    assert err.value.expected == "tensor(int64)" and err.value.found == "tensor(int32)"


def test_table_errors_name_the_field(scripted: tuple[dict[str, Any], Path]) -> None:
    table, base = scripted
    with pytest.raises(BundleError,
                       match=r"field \[stt\] partial_interval_ms is invalid; expected an integer"):
        stt.read_params({**table, "partial_interval_ms": "fast"}, base)
    with pytest.raises(BundleError, match=r"field \[stt\] encoder is missing"):
        stt.check({k: v for k, v in table.items() if k != "encoder"}, base)


def test_every_shared_recording_transcribes_to_its_allowance(
    scripted_engine: stt.SttEngine,
) -> None:
    manifest = json.loads((speech_dir() / "manifest.json").read_text())
    names = [u["file"] for u in manifest["utterances"]]
    assert len(names) >= 10
    audios = [load_speech(name)[0] for name in names]
    engine = scripted_engine
    script = script_tokens(engine)
    for sid, audio in enumerate(audios, start=100):
        engine.open_session(sid)
        engine.feed(sid, audio)
        engine.end_utterance(sid)
    try:
        events = {e.session: e for e in engine.step(max_batch=len(audios))}
    finally:
        for sid in range(100, 100 + len(audios)):
            engine.close_session(sid)
    for sid, audio in enumerate(audios, start=100):
        assert list(events[sid].tokens) == script[: allowance(audio, len(script))]


def test_audio_after_an_endpoint_starts_the_next_utterance(
    scripted_engine: stt.SttEngine,
) -> None:
    audio, _ = load_speech("00_store_hours.wav")
    engine = scripted_engine
    script = script_tokens(engine)
    first, second = audio[: 8000 + 3 * SAMPLES_PER_TOKEN], audio
    engine.open_session(41)
    try:
        engine.feed(41, first)
        engine.end_utterance(41)
        engine.feed(41, second[:16000])  # the next turn begins before the final is out
        engine.feed(41, second[16000:])
        assert engine.buffered_samples(41) == first.size + second.size
        (final,) = [e for e in engine.step() if e.final]
        assert final.audio_samples == first.size
        assert list(final.tokens) == script[: allowance(first, len(script))]
        assert engine.buffered_samples(41) == second.size
        engine.end_utterance(41)
        events = engine.step()
        assert [e.final for e in events] == [True]
        assert events[0].text == SCRIPT and events[0].audio_samples == second.size
    finally:
        engine.close_session(41)

"""The Piper engine through real onnxruntime sessions and piper-phonemize.

The scripted voice renders each phoneme id as a run of samples of a known value, so the
audio decodes back to the exact ids the engine fed it; the ids are checked against
piper-phonemize's own id function for the same text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import piper_phonemize
import pytest

from voicegate.core.audio import StreamResampler
from voicegate.core.text import ClauseChunker
from voicegate.models import tts
from voicegate.models.errors import BundleError

REPLY = "Sure! The store opens at nine tomorrow, and it closes at six in the evening."


@pytest.fixture(scope="session")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("tts_scripted")
    table = tts.synth(base, seed=3, scripted=True)
    table["sentence_silence_ms"] = 0
    return table, base


@pytest.fixture(scope="session")
def random_voice(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("tts_random")
    return tts.synth(base, seed=3), base


def decode_ids(audio: np.ndarray, table: dict[str, Any], *, per_id: int | None = None) -> (
    list[int]
):
    """Read the ids back from a scripted voice's audio at the voice's own rate."""
    step = per_id or table["scripted_samples_per_id"]
    assert audio.size % step == 0
    runs = audio.reshape(-1, step)
    assert np.all(runs == runs[:, :1])  # each id is a flat run
    codes = runs[:, 0].astype(np.float64) * table["scripted_denominator"]
    assert np.all(codes == np.round(codes))
    return [int(c) - 1 for c in codes]


def piper_ids(text: str) -> list[int]:
    phonemes: list[str] = []
    for sentence in piper_phonemize.phonemize_espeak(text, "en-us"):
        if phonemes and sentence:
            phonemes.append(" ")
        phonemes += sentence
    ids: list[int] = piper_phonemize.phoneme_ids_espeak(phonemes)
    return ids


def run_reply(engine: tts.TtsEngine, replies: dict[int, str], piece: int = 7) -> (
    list[tts.SpeechChunk]
):
    chunks: list[tts.SpeechChunk] = []
    longest = max(len(text) for text in replies.values())
    for start in range(0, longest, piece):
        for sid, text in replies.items():
            if start < len(text):
                engine.push_text(sid, text[start : start + piece])
        chunks += engine.step()
    for sid in replies:
        engine.end_reply(sid)
    while engine.pending():
        chunks += engine.step()
    return chunks


def test_voice_config_has_pipers_schema(scripted: tuple[dict[str, Any], Path]) -> None:
    table, base = scripted
    config = json.loads((base / table["config"]).read_text())
    assert config["audio"]["sample_rate"] == 22050
    assert config["espeak"]["voice"] == "en-us"
    assert set(config["inference"]) == {"noise_scale", "length_scale", "noise_w"}
    assert config["phoneme_type"] == "espeak"
    assert config["phoneme_id_map"]["_"] == [0] and config["phoneme_id_map"]["^"] == [1]
    assert config["phoneme_id_map"]["$"] == [2]
    assert config["num_speakers"] == 1 and config["speaker_id_map"] == {}
    model = onnx.load(str(base / table["model"]))
    assert [i.name for i in model.graph.input] == ["input", "input_lengths", "scales"]
    assert [o.name for o in model.graph.output] == ["output"]


def test_phoneme_ids_follow_piper_convention(scripted: tuple[dict[str, Any], Path]) -> None:
    voice = tts.TtsEngine.from_table(*scripted).voice
    for text in ("Hello there!", "I paid $3.50 for it, Mr. Smith.", REPLY):
        assert voice.text_ids(text) == piper_ids(text)


def test_scripted_reply_audio_spells_each_clause_in_order(
    scripted: tuple[dict[str, Any], Path],
) -> None:
    table, base = scripted
    engine = tts.TtsEngine.from_table(table, base)
    engine.open_session(1, sample_rate=engine.sample_rate)
    chunks = run_reply(engine, {1: REPLY})
    chunker = ClauseChunker(table["max_words"], table["first_max_words"])
    clauses = [c.text for c in chunker.push(REPLY) + chunker.flush()]
    assert clauses[0] == "Sure!"
    assert [c.clause for c in chunks] == list(range(len(clauses)))
    assert [c.last for c in chunks] == [False] * (len(clauses) - 1) + [True]
    for chunk, clause in zip(chunks, clauses, strict=True):
        assert chunk.sample_rate == 22050
        assert decode_ids(chunk.audio, table) == piper_ids(clause)


def test_first_audio_comes_before_the_reply_is_complete(
    scripted: tuple[dict[str, Any], Path],
) -> None:
    table, base = scripted
    engine = tts.TtsEngine.from_table(table, base)
    engine.open_session(2, sample_rate=22050)
    engine.push_text(2, "Let me check that for you because it")
    (first,) = engine.step()  # the word limit of the first clause cut it
    assert decode_ids(first.audio, table) == piper_ids("Let me check that for you")
    assert not first.last and not engine.pending()
    engine.end_reply(2)
    (rest,) = engine.step()
    assert rest.last and decode_ids(rest.audio, table) == piper_ids("because it")


def test_sessions_are_batched_and_resampled_to_their_own_rates(
    scripted: tuple[dict[str, Any], Path],
) -> None:
    table, base = scripted
    engine = tts.TtsEngine.from_table(table, base)
    replies = {1: REPLY, 2: "Yes. Your refund was sent yesterday.", 3: "Goodbye!"}
    rates = {1: 16000, 2: 8000, 3: 22050}
    for sid, rate in rates.items():
        engine.open_session(sid, sample_rate=rate)
    batch_sizes: list[int] = []
    run = engine.voice.runner.run

    def counting_run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        batch_sizes.append(len(feeds["input"]))
        return run(feeds)

    engine.voice.runner.run = counting_run  # type: ignore[method-assign]
    chunks = run_reply(engine, replies)
    engine.voice.runner.run = run  # type: ignore[method-assign]
    assert max(batch_sizes) == 3 and sum(batch_sizes) == len(chunks)
    for sid, text in replies.items():
        mine = [c for c in chunks if c.session == sid]
        assert all(c.sample_rate == rates[sid] for c in mine)
        assert mine[-1].last and sum(c.last for c in mine) == 1
        # The same clauses synthesized alone and resampled by one stream.
        chunker = ClauseChunker(table["max_words"], table["first_max_words"])
        clauses = [c.text for c in chunker.push(text) + chunker.flush()]
        stream = StreamResampler(22050, rates[sid])
        alone = [
            stream.process(engine.voice.synthesize([engine.voice.text_ids(c)])[0],
                           last=i == len(clauses) - 1)
            for i, c in enumerate(clauses)
        ]
        assert len(alone) == len(mine)
        for got, want in zip(mine, alone, strict=True):
            np.testing.assert_array_equal(got.audio, want)


def test_random_voice_batched_equals_unbatched(random_voice: tuple[dict[str, Any], Path]) -> None:
    voice = tts.TtsEngine.from_table(*random_voice).voice
    texts = ["Hello.", "The store opens at nine tomorrow morning,", "Okay"]
    batch = [voice.text_ids(t) for t in texts]
    together = voice.synthesize(batch)
    for ids, audio in zip(batch, together, strict=True):
        (alone,) = voice.synthesize([ids])
        assert audio.size == alone.size > 0
        np.testing.assert_allclose(audio, alone, rtol=0, atol=1e-6)
    assert together[1].size > together[0].size > 0


def test_length_scale_override_stretches_each_id(tmp_path: Path,
                                                 scripted: tuple[dict[str, Any], Path]) -> None:
    table, base = scripted
    slow = tts.TtsEngine.from_table({**table, "length_scale": 2.0}, base)
    ids = slow.voice.text_ids("Hi.")
    (audio,) = slow.voice.synthesize([ids])
    assert decode_ids(audio, table, per_id=2 * table["scripted_samples_per_id"]) == ids


def test_multi_speaker_text_voice_with_rank4_output(tmp_path: Path) -> None:
    table = tts.synth(tmp_path, seed=1, scripted=True, phoneme_type="text", num_speakers=3,
                      output_rank=4)
    config = json.loads((tmp_path / table["config"]).read_text())
    assert config["speaker_id_map"] == {"speaker_0": 0, "speaker_1": 1, "speaker_2": 2}
    engine = tts.TtsEngine.from_table({**table, "sentence_silence_ms": 0}, tmp_path)
    engine.open_session(1, 22050, speaker="speaker_2")
    engine.open_session(2, 22050)
    engine.push_text(1, "Hi, Yo!")
    engine.push_text(2, "Hi, Yo!")
    chunks = engine.step()
    id_map = config["phoneme_id_map"]
    expected = [1, 0] + [x for ch in "hi," for x in (id_map[ch][0], 0)] + [2]
    for chunk, speaker in zip(chunks, (2, 0), strict=True):
        codes = decode_ids(chunk.audio, table)
        assert [c - 257 * speaker for c in codes] == expected
    with pytest.raises(KeyError, match="no speaker"):
        engine.open_session(3, 22050, speaker="nobody")


def test_cancel_drops_queued_clauses(scripted: tuple[dict[str, Any], Path]) -> None:
    engine = tts.TtsEngine.from_table(*scripted)
    engine.open_session(1, 16000)
    engine.push_text(1, "One. Two. Three. Four")
    assert engine.pending()
    engine.cancel(1)
    assert not engine.pending() and engine.step() == []
    engine.push_text(1, "Again.")
    engine.end_reply(1)
    (chunk,) = engine.step()
    assert chunk.clause == 0 and chunk.last


def test_end_reply_after_the_last_clause_sends_a_closing_chunk(
    scripted: tuple[dict[str, Any], Path],
) -> None:
    engine = tts.TtsEngine.from_table(*scripted)
    engine.open_session(1, 16000)
    engine.push_text(1, "All done. ")
    (spoken,) = engine.step()
    assert not spoken.last
    engine.end_reply(1)
    (closing,) = engine.step()
    assert closing.last and closing.clause == -1
    total = spoken.audio.size + closing.audio.size
    voice = engine.voice
    expected = StreamResampler(22050, 16000).process(
        voice.synthesize([voice.text_ids("All done.")])[0], last=True)
    assert total == expected.size


def test_check_reports_the_voice(scripted: tuple[dict[str, Any], Path]) -> None:
    (report,) = tts.check(*scripted)
    assert report.parameters["sample_rate"] == 22050
    assert report.parameters["phoneme_type"] == "espeak"
    assert report.outputs == [("output", "tensor(float)", "[batch_size, 1, time]")]
    assert report.call_ms is not None


def _copy(src: tuple[dict[str, Any], Path], dst: Path) -> tuple[dict[str, Any], Path]:
    table, base = src
    (dst / "tts").mkdir(parents=True)
    for path in (base / "tts").iterdir():
        (dst / "tts" / path.name).write_bytes(path.read_bytes())
    return dict(table), dst


def test_check_rejects_renamed_input_missing_field_and_wrong_dtype(
    scripted: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    table, base = _copy(scripted, tmp_path / "renamed")
    path = base / table["model"]
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.input[:] = ["lengths" if n == "input_lengths" else n for n in node.input]
    next(i for i in model.graph.input if i.name == "input_lengths").name = "lengths"
    onnx.save(model, str(path))
    with pytest.raises(BundleError, match="missing input; tensor 'input_lengths'"):
        tts.check(table, base)

    table, base = _copy(scripted, tmp_path / "field")
    config_path = base / table["config"]
    config = json.loads(config_path.read_text())
    del config["audio"]["sample_rate"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"missing field audio\.sample_rate") as err:
        tts.check(table, base)
    assert err.value.file == str(config_path)

    table, base = _copy(scripted, tmp_path / "dtype")
    path = base / table["model"]
    model = onnx.load(str(path))
    next(i for i in model.graph.input if i.name == "input_lengths").type.tensor_type.elem_type = (
        onnx.TensorProto.INT32)
    for node in model.graph.node:  # keep the graph valid: cast the int32 lengths back
        node.input[:] = ["lengths64" if n == "input_lengths" else n for n in node.input]
    model.graph.node.insert(0, onnx.helper.make_node(
        "Cast", ["input_lengths"], ["lengths64"], to=onnx.TensorProto.INT64))
    onnx.save(model, str(path))
    with pytest.raises(BundleError, match="wrong dtype of input") as err:
        tts.check(table, base)
    assert err.value.tensor == "input_lengths" and err.value.found == "tensor(int32)"

    table, base = _copy(scripted, tmp_path / "missing")
    (base / table["model"]).unlink()
    with pytest.raises(BundleError,
                       match=r"voice.onnx: file not found \(named by field \[tts\] model"):
        tts.check(table, base)


def test_a_second_reply_queues_behind_the_first(scripted: tuple[dict[str, Any], Path]) -> None:
    table, base = scripted
    engine = tts.TtsEngine.from_table(table, base)
    engine.open_session(1, 22050)
    engine.push_text(1, "First reply. ")
    engine.end_reply(1)
    engine.push_text(1, "Second one. ")  # before the first reply was synthesized
    engine.end_reply(1)
    chunks = []
    while engine.pending():
        chunks += engine.step()
    assert [(c.clause, c.last) for c in chunks] == [(0, True), (0, True)]
    assert [decode_ids(c.audio, table) for c in chunks] == [
        piper_ids("First reply."), piper_ids("Second one.")]

"""The optimum-layout LLM graphs: the KV cache and the attention mask do what they claim,
and the scripted model's text depends on its cache being right."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from voicegate.models.graphs.llm import SIZES, LlmDims, build_random_llm, build_scripted_llm

LAYERS, HEADS, HEAD_DIM, VOCAB = 2, 4, 16, 300
START, END = 6, 2
REPLY = [100, 101, 57, 200, 33]

Array = npt.NDArray[Any]


def open_model(model: Any) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def empty_past(batch: int, layers: int = LAYERS) -> list[Array]:
    return [np.zeros((batch, HEADS, 0, HEAD_DIM), np.float32) for _ in range(2 * layers)]


def run(
    session: ort.InferenceSession,
    ids: Array,
    past: list[Array],
    mask: Array | None = None,
    positions: Array | None = None,
) -> tuple[Array, list[Array]]:
    batch, new = ids.shape
    cached = past[0].shape[2]
    if mask is None:
        mask = np.ones((batch, cached + new), np.int64)
    if positions is None:
        positions = np.tile(np.arange(cached, cached + new), (batch, 1))
    feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
    for i in range(len(past) // 2):
        feeds[f"past_key_values.{i}.key"] = past[2 * i]
        feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
    logits, *present = session.run(None, feeds)
    return logits, present


@pytest.fixture(scope="module")
def scripted() -> ort.InferenceSession:
    return open_model(build_scripted_llm(vocab=VOCAB, layers=LAYERS, heads=HEADS,
                                         head_dim=HEAD_DIM, start_id=START, reply_ids=REPLY,
                                         end_id=END))


@pytest.fixture(scope="module")
def random_llm() -> ort.InferenceSession:
    dims = LlmDims(vocab=VOCAB, **{**SIZES["tiny"], "layers": LAYERS, "heads": HEADS,
                                  "head_dim": HEAD_DIM})
    return open_model(build_random_llm(dims, seed=3))


def decode(session: ort.InferenceSession, prompt: list[int], past: list[Array],
           steps: int) -> list[int]:
    """Greedy tokens after prefilling ``prompt`` on top of ``past``."""
    logits, present = run(session, np.array([prompt]), past)
    out = [int(logits[0, -1].argmax())]
    for _ in range(steps - 1):
        logits, present = run(session, np.array([[out[-1]]]), present)
        out.append(int(logits[0, -1].argmax()))
    return out


def test_scripted_spells_reply_then_end(scripted: ort.InferenceSession) -> None:
    assert decode(scripted, [1, 40, 41, START], empty_past(1), 7) == [*REPLY, END, END]


def test_scripted_counts_from_the_last_marker(scripted: ort.InferenceSession) -> None:
    # An earlier answer in the history does not disturb the count.
    prompt = [1, START, *REPLY, END, 40, START]
    assert decode(scripted, prompt, empty_past(1), 6) == [*REPLY, END]
    logits, _ = run(scripted, np.array([[1, 40, 41]]), empty_past(1))
    assert logits[0].argmax(-1).tolist() == [END, END, END]  # no marker: nothing to say


def test_scripted_text_breaks_with_a_broken_cache(scripted: ort.InferenceSession) -> None:
    prompt = [1, 40, 41, 42, START]
    _, present = run(scripted, np.array([prompt]), empty_past(1))
    good = decode(scripted, [REPLY[0]], present, 3)
    assert good == REPLY[1:4]
    truncated = [a[:, :, :4, :] for a in present]  # lost the marker's column
    zeroed = [np.zeros_like(a) for a in present]
    one_layer = [a.copy() for a in present]
    one_layer[3][..., 4, :] = 0.0  # the marker's value in layer 1 only
    _, other = run(scripted, np.array([[1, 40, START, 41, 42]]), empty_past(1))  # not ours
    for broken in (truncated, zeroed, one_layer, other):
        logits, _ = run(scripted, np.array([[REPLY[0]]]), broken,
                        positions=np.array([[len(prompt)]]))
        assert int(logits[0, -1].argmax()) != REPLY[1]


def test_scripted_respects_the_attention_mask(scripted: ort.InferenceSession) -> None:
    # The same prompt left-padded with a marker the mask hides gives the same reply.
    prompt = [1, 40, START]
    padded = np.array([[START, START, *prompt]])
    mask = np.array([[0, 0, 1, 1, 1]])
    positions = np.array([[0, 0, 0, 1, 2]])
    logits, present = run(scripted, padded, empty_past(1), mask, positions)
    assert int(logits[0, -1].argmax()) == REPLY[0]
    logits, _ = run(scripted, np.array([[REPLY[0]]]), present,
                    np.array([[0, 0, 1, 1, 1, 1]]), np.array([[3]]))
    assert int(logits[0, -1].argmax()) == REPLY[1]
    unmasked, _ = run(scripted, padded, empty_past(1), np.ones_like(mask), positions)
    assert int(unmasked[0, 2].argmax()) != int(logits[0, -1].argmax())


def test_random_model_cache_equals_full_recompute(random_llm: ort.InferenceSession) -> None:
    ids = np.array([[5, 17, 99, 4, 250, 8, 61]])
    full, _ = run(random_llm, ids, empty_past(1))
    _, present = run(random_llm, ids[:, :4], empty_past(1))
    logits, present = run(random_llm, ids[:, 4:6], present)
    last, _ = run(random_llm, ids[:, 6:], present)
    np.testing.assert_allclose(logits[0], full[0, 4:6], atol=1e-4)
    np.testing.assert_allclose(last[0, 0], full[0, 6], atol=1e-4)


def test_random_model_padding_is_invisible(random_llm: ort.InferenceSession) -> None:
    short = np.array([[5, 17, 99]])
    long = np.array([[9, 9, 9, 9, 5, 17, 99]])
    alone, _ = run(random_llm, short, empty_past(1))
    both, _ = run(
        random_llm,
        np.concatenate([np.array([[0, 0, 0, 0, 5, 17, 99]]), long]),
        empty_past(2),
        np.array([[0, 0, 0, 0, 1, 1, 1], [1] * 7]),
        np.array([[0, 0, 0, 0, 0, 1, 2], list(range(7))]),
    )
    np.testing.assert_allclose(both[0, -1], alone[0, -1], atol=1e-4)
    assert not np.allclose(both[1, -1], alone[0, -1], atol=1e-2)


def test_builder_rejects_bad_dimensions() -> None:
    with pytest.raises(ValueError, match="head_dim must be even"):
        LlmDims(vocab=10, hidden=8, layers=1, heads=1, head_dim=3, ffn=8)
    with pytest.raises(ValueError, match="outside vocabulary"):
        build_scripted_llm(vocab=10, layers=1, heads=1, head_dim=2, start_id=3,
                           reply_ids=[12], end_id=2)

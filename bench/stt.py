"""Real Whisper in the STT engine: the encoder per turn with Whisper's 30 s window
against the utterance-length window, the decoder's cost per token, and the WER of both
on ../shared/speech next to faster-whisper's (the peer, same weights, same run).

    python -m bench stt [--ct2 DIR] [--speech DIR] [--batches 1,4,16] [--repeats 3]
                        [--seconds 3] [--provider cpu] [--threads 1] [--no-peer]

The CTranslate2 model (default: the installed Whisper tiny.en) is imported twice, once
per window. Encoder: one batched call on B turns of ``--seconds`` of speech, median of
``--repeats``, reported per turn. Decoder: one token per turn per step (with the KV
cache) after the prompt, per token and turn. WER: each recording decoded alone, as a
turn is at its end, greedy; faster-whisper with the 30 s window, greedy, one thread.
Writes bench/results/stt.json.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from voicegate.core.wav import read_wav  # noqa: E402
from voicegate.models import melspec, stt  # noqa: E402
from voicegate.models.importers.whisper import import_whisper  # noqa: E402
from voicegate.models.runtime import ExecutionConfig  # noqa: E402
from voicegate.models.wer import corpus_wer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
WINDOWS = ("30s", "utterance")
DECODE_STEPS = 16


def _median_s(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: first-call allocations and thread start
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _corpus(speech: Path) -> tuple[list[str], list[str], list[np.ndarray]]:
    manifest = json.loads((speech / "manifest.json").read_text())["utterances"]
    audios = [read_wav(speech / e["file"]).samples.astype(np.float32) / 32768.0
              for e in manifest]
    return [e["file"] for e in manifest], [e["text"] for e in manifest], audios


def _turn(audios: Sequence[np.ndarray], seconds: float) -> np.ndarray:
    """``seconds`` of speech: the recordings joined, cut to length."""
    joined = np.concatenate(list(audios))
    return joined[: int(seconds * melspec.SAMPLE_RATE)].copy()


def _encoder_rows(models: dict[str, stt.WhisperModel], turn: np.ndarray,
                  batches: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}
        for window, model in models.items():
            feats = model.features([turn] * batch)
            row[f"{window}_frames"] = int(feats.shape[2])
            row[f"{window}_ms_per_turn"] = (
                _median_s(partial(model.encode, feats), repeats) * 1000 / batch)
        row["ratio"] = row["utterance_ms_per_turn"] / row["30s_ms_per_turn"]
        rows.append(row)
    return rows


def _decoder_rows(models: dict[str, stt.WhisperModel], turn: np.ndarray,
                  batches: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}
        for window, model in models.items():
            hidden = model.encode(model.features([turn] * batch))
            logits, cache = model.decode_start(hidden)
            tokens = logits.argmax(axis=1).astype(np.int64)
            model.decode_step(tokens, hidden, cache)  # warm-up
            started = time.perf_counter()
            for _ in range(DECODE_STEPS):
                logits, cache = model.decode_step(tokens, hidden, cache)
                tokens = logits.argmax(axis=1).astype(np.int64)
            elapsed = time.perf_counter() - started
            row[f"{window}_ms_per_token"] = elapsed * 1000 / DECODE_STEPS / batch
        rows.append(row)
    return rows


def _wer_rows(models: dict[str, stt.WhisperModel], texts: list[str],
              audios: list[np.ndarray], peer: Any) -> tuple[list[dict[str, Any]],
                                                            dict[str, list[str]]]:
    rows, hyps = [], {}
    seconds = sum(a.size for a in audios) / melspec.SAMPLE_RATE
    for window, model in models.items():
        started = time.perf_counter()
        hyps[window] = [model.text(model.transcribe([a])[0]) for a in audios]
        elapsed = time.perf_counter() - started
        rows.append({"engine": f"voicegate ONNX, {window} window",
                     "wer": corpus_wer(texts, hyps[window]),
                     "s_per_utterance": elapsed / len(audios), "rtf": elapsed / seconds})
    if peer is not None:
        started = time.perf_counter()
        hyps["faster-whisper"] = []
        for audio in audios:
            segments, _ = peer.transcribe(audio, language="en", beam_size=1, temperature=0.0,
                                          condition_on_previous_text=False,
                                          without_timestamps=True, vad_filter=False)
            hyps["faster-whisper"].append(" ".join(s.text.strip() for s in segments))
        elapsed = time.perf_counter() - started
        rows.append({"engine": "faster-whisper (peer), 30 s window",
                     "wer": corpus_wer(texts, hyps["faster-whisper"]),
                     "s_per_utterance": elapsed / len(audios), "rtf": elapsed / seconds})
    return rows, hyps


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stt", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--ct2", type=Path, default=None,
                        help="CTranslate2 Whisper directory (default: installed tiny.en)")
    parser.add_argument("--speech", type=Path, default=REPO.parent / "shared" / "speech")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="turn length (encoder)")
    parser.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--no-peer", action="store_true", help="skip faster-whisper")
    parser.add_argument("--out", type=Path, default=RESULTS / "stt.json")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b]
    if args.ct2 is None:
        from voicegate.models.weights import WHISPER_TINY_EN  # noqa: PLC0415

        args.ct2 = WHISPER_TINY_EN.path()
    names, texts, audios = _corpus(args.speech)
    config = ExecutionConfig(provider=args.provider, intra_op_threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-stt-") as tmp:
        models: dict[str, stt.WhisperModel] = {}
        import_s = {}
        for window in WINDOWS:
            root = Path(tmp) / window
            started = time.perf_counter()
            table = import_whisper(args.ct2, root, window=window)
            import_s[window] = time.perf_counter() - started
            models[window] = stt.load_model(table, root, config)
        turn = _turn(audios, args.seconds)
        encoder = _encoder_rows(models, turn, batches, args.repeats)
        decoder = _decoder_rows(models, turn, batches)
        peer = None
        if not args.no_peer:
            from faster_whisper import WhisperModel  # noqa: PLC0415

            peer = WhisperModel(str(args.ct2), device="cuda" if args.provider != "cpu"
                                else "cpu", compute_type="float32", cpu_threads=args.threads)
        wer, hyps = _wer_rows(models, texts, audios, peer)
    print(f"Whisper {args.ct2} ({args.provider}, {args.threads} thread(s)); import "
          + ", ".join(f"{w} {s:.1f} s" for w, s in import_s.items()))
    print(f"\nencoder, {args.seconds:g} s turn     30 s window        utterance window   ratio")
    print("batch   frames 30s/utt    ms per turn        ms per turn")
    for r in encoder:
        print(f"{r['batch']:>5}   {r['30s_frames']:>6}/{r['utterance_frames']:<6} "
              f"{r['30s_ms_per_turn']:>12.1f}   {r['utterance_ms_per_turn']:>16.1f}"
              f"   {r['ratio']:>6.3f}")
    print("\ndecoder step     ms per token and turn")
    print("batch   30s window  utterance window")
    for r in decoder:
        print(f"{r['batch']:>5}   {r['30s_ms_per_token']:>10.2f}  "
              f"{r['utterance_ms_per_token']:>16.2f}")
    print(f"\nWER on {args.speech} ({len(texts)} recordings)")
    print(f"{'engine':<38} {'WER':>6} {'s/utt':>7} {'RTF':>6}")
    for r in wer:
        print(f"{r['engine']:<38} {100 * r['wer']:>5.1f}% {r['s_per_utterance']:>7.2f} "
              f"{r['rtf']:>6.3f}")
    if "faster-whisper" in hyps:
        differ = [(n, hyps["30s"][i], hyps["faster-whisper"][i]) for i, n in enumerate(names)
                  if hyps["30s"][i] != hyps["faster-whisper"][i]]
        print(f"\n30 s window vs faster-whisper: {len(names) - len(differ)}/{len(names)} same")
        for name, ours, theirs in differ:
            print(f"  {name}: {ours!r} | faster-whisper: {theirs!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "bench": "stt", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "model": str(args.ct2),
        "provider": args.provider, "threads": args.threads, "turn_seconds": args.seconds,
        "import_s": import_s, "encoder": encoder, "decoder": decoder, "wer": wer,
        "transcripts": {"files": names, "references": texts, **hyps},
    }, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0

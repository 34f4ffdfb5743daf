"""Model engines: cost per item against batch size, and what batching buys.

For each engine (VAD chunk, STT log-mel features, STT encoder, STT decode step, LLM decode
step, TTS clause) one batched call is timed at batch sizes 1, 2, 4, ... 64. The table
gives the wall time per call, the cost per item, items per second per core (items over
the CPU time the process used, so a call that spreads over several threads pays for all
of them), and the batching gain: cost per item at batch 1 over cost per item at this
batch. Ratios, not absolute times, are the result: absolute times drift with the box.

    python -m bench models [--quick] [--bundle DIR] [--size tiny|base] [--provider cpu]

Without ``--bundle`` each stage is generated into a temporary directory (random weights,
``--size``). Writes bench/results/models.json, models.md and models.png.
"""

from __future__ import annotations

import os
import sys

# A pinned worker runs numpy's BLAS on one thread as well. Left alone, OpenBLAS keeps a
# spinning thread per core: on a shared box that doubles the CPU time per item of the
# log-mel front end and adds outliers. It only takes effect if numpy is not loaded yet.
_NUMPY_PRELOADED = "numpy" in sys.modules
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from voicegate.models.runtime import ExecutionConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FULL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_BATCHES = (1, 4, 16)
CLAUSES = (
    "The store opens at nine tomorrow,",
    "and it closes at six in the evening.",
    "Your refund was sent yesterday,",
    "so it should arrive within three days.",
    "Is there anything else I can help with?",
)

# A callable that runs one batched call of the engine at the batch size it was made for.
Call = Callable[[], object]


@dataclass(frozen=True)
class Probe:
    """What to time, and untimed work that restores the measured state between calls."""

    call: Call
    between: Callable[[], None] | None = None


Factory = Callable[[int], Probe]


@dataclass(frozen=True)
class Row:
    engine: str
    batch: int
    calls: int
    ms_per_call: float
    ms_per_item: float
    items_per_s_per_core: float
    gain: float  # cost per item at batch 1 / cost per item here


@dataclass
class Context:
    tables: dict[str, dict[str, Any]]
    base: Path
    config: ExecutionConfig


MAX_CALLS = 64  # per measurement: bounds how far an LLM's caches grow while timed


def _time_call(probe: Probe, *, min_seconds: float, min_calls: int) -> (
    tuple[float, float, int]
):
    """Median wall seconds per call and mean CPU seconds per call."""
    probe.call()  # warm-up: first-run allocations and kernel choice
    walls: list[float] = []
    cpus: list[float] = []
    timed = 0.0
    while len(walls) < min_calls or (timed < min_seconds and len(walls) < MAX_CALLS):
        if probe.between is not None:
            probe.between()
        c0, t0 = time.process_time(), time.perf_counter()
        probe.call()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        timed += walls[-1]
    return statistics.median(walls), statistics.fmean(cpus), len(walls)


# ------------------------------------------------------------------------- engines


def vad_factory(ctx: Context) -> Factory:
    vad = importlib.import_module("voicegate.models.vad")
    engine = vad.SileroVad.from_table(ctx.tables["vad"], ctx.base, ctx.config)
    chunk = getattr(vad, "CHUNK", 512)
    rng = np.random.default_rng(0)
    audio = (0.05 * rng.standard_normal(chunk)).astype(np.float32)

    opened: list[int] = []

    def make(batch: int) -> Probe:
        while opened:
            engine.close_session(opened.pop())
        for sid in range(batch):
            engine.open_session(sid)
            opened.append(sid)

        def call() -> object:
            for sid in range(batch):
                engine.feed(sid, audio)
            return engine.step()

        return Probe(call)

    return make


def _stt_model(ctx: Context) -> Any:
    stt = importlib.import_module("voicegate.models.stt")
    return stt.load_model(ctx.tables["stt"], ctx.base, ctx.config)


def _utterances(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    # 2 to 4 s utterances, the length of a typical turn.
    return [(0.05 * rng.standard_normal(int(16000 * (2 + (i % 3))))).astype(np.float32)
            for i in range(batch)]


def stt_features_factory(ctx: Context) -> Factory:
    model = _stt_model(ctx)

    def make(batch: int) -> Probe:
        audios = _utterances(batch)
        return Probe(lambda: model.features(audios))

    return make


def stt_encoder_factory(ctx: Context) -> Factory:
    model = _stt_model(ctx)

    def make(batch: int) -> Probe:
        features = model.features(_utterances(batch))
        return Probe(lambda: model.encode(features))

    return make


def stt_decode_factory(ctx: Context) -> Factory:
    model = _stt_model(ctx)
    one = model.encode(model.features(_utterances(1)))

    def make(batch: int) -> Probe:
        hidden = np.repeat(one, batch, axis=0)
        logits, cache = model.decode_start(hidden)
        tokens = logits.argmax(axis=1).astype(np.int64)
        for _ in range(8):  # a cache of a dozen tokens, as mid-transcript
            logits, cache = model.decode_step(tokens, hidden, cache)
            tokens = logits.argmax(axis=1).astype(np.int64)
        return Probe(lambda: model.decode_step(tokens, hidden, cache))

    return make


def llm_decode_factory(ctx: Context) -> Factory:
    llm = importlib.import_module("voicegate.models.llm")
    engine = llm.LlmEngine.from_table(ctx.tables["llm"], ctx.base, ctx.config, max_batch=64)
    opened: list[int] = []
    seeds = iter(range(1, 1 << 30))

    greedy = llm.Sampling(max_tokens=100_000)

    def begin(sid: int) -> None:
        # Greedy, the default; a numbered prompt gives each restart its own path.
        text = f"{CLAUSES[sid % len(CLAUSES)]} ({next(seeds)})"
        engine.start(sid, [llm.Message("user", text)], greedy)

    def start(sids: Sequence[int]) -> None:
        """Start generations and step (untimed) until each has its first token and is
        still running, so that the next step is a pure decode step of the whole batch."""
        pending = set(sids)
        for sid in pending:
            begin(sid)
        for _ in range(8 * (len(opened) + 4)):
            for event in engine.step():
                if event.finished is not None:
                    begin(event.sid)
                    pending.add(event.sid)
                else:
                    pending.discard(event.sid)
            if not pending:
                return
        raise RuntimeError(f"could not keep {len(opened)} LLM generations running")

    def make(batch: int) -> Probe:
        while opened:
            engine.close_session(opened.pop())
        for sid in range(batch):
            engine.open_session(sid)
            opened.append(sid)
        start(range(batch))
        ended: list[int] = []

        def call() -> object:
            events = engine.step()
            ended.extend(event.sid for event in events if event.finished is not None)
            return events

        def restart_ended() -> None:
            # A generation that ended (its end token) leaves the batch: start it again,
            # untimed, so every timed step decodes all of them.
            if ended:
                start(list(dict.fromkeys(ended)))
                ended.clear()

        return Probe(call, restart_ended)

    return make


def tts_factory(ctx: Context) -> Factory:
    tts = importlib.import_module("voicegate.models.tts")
    voice = tts.load_voice(ctx.tables["tts"], ctx.base, ctx.config)
    ids = [voice.text_ids(text) for text in CLAUSES]

    def make(batch: int) -> Probe:
        batch_ids = [ids[i % len(ids)] for i in range(batch)]
        return Probe(lambda: voice.synthesize(batch_ids))

    return make


ENGINES: dict[str, tuple[str, Callable[[Context], Factory]]] = {
    "vad chunk": ("vad", vad_factory),
    "stt features": ("stt", stt_features_factory),
    "stt encoder": ("stt", stt_encoder_factory),
    "stt decode step": ("stt", stt_decode_factory),
    "llm decode step": ("llm", llm_decode_factory),
    "tts clause": ("tts", tts_factory),
}


# ------------------------------------------------------------------------- bundle


def _generate(out: Path, size: str, seed: int, notes: list[str]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for stage in ("vad", "stt", "llm", "tts"):
        name = f"voicegate.models.{stage}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            notes.append(f"{stage}: {name} is not available here; its rows are skipped")
            continue
        tables[stage] = module.synth(out, seed=seed, size=size)
    return tables


def _load_bundle(folder: Path) -> dict[str, dict[str, Any]]:
    with (folder / "bundle.toml").open("rb") as handle:
        data = tomllib.load(handle)
    return {stage: data[stage] for stage in ("vad", "stt", "llm", "tts") if stage in data}


# ------------------------------------------------------------------------- run


def run(ctx: Context, batches: Sequence[int], *, min_seconds: float, min_calls: int,
        engines: Sequence[str], notes: list[str]) -> list[Row]:
    rows: list[Row] = []
    threads = ctx.config.intra_op_threads or os.cpu_count() or 1
    for name in engines:
        stage, factory = ENGINES[name]
        if stage not in ctx.tables:
            if not any(note.startswith(f"{stage}:") for note in notes):
                notes.append(f"{stage}: no [{stage}] table in the bundle; its rows are skipped")
            continue
        make = factory(ctx)
        base_cost: float | None = None
        for batch in batches:
            wall, cpu, calls = _time_call(make(batch), min_seconds=min_seconds,
                                          min_calls=min_calls)
            per_item = wall / batch
            base_cost = per_item if base_cost is None else base_cost
            cpu_per_item = max(cpu, 1e-9) / batch
            rows.append(Row(
                engine=name, batch=batch, calls=calls, ms_per_call=wall * 1000,
                ms_per_item=per_item * 1000,
                items_per_s_per_core=1.0 / cpu_per_item if ctx.config.provider == "cpu"
                else batch / wall / threads,
                gain=base_cost / per_item,
            ))
            print(f"  {name:<16} batch {batch:>3}: {wall * 1000:9.2f} ms/call "
                  f"{per_item * 1000:9.3f} ms/item", file=sys.stderr, flush=True)
    return rows


def table_text(rows: Sequence[Row]) -> str:
    header = ("| engine | batch | ms/call | ms/item | items/s/core | gain vs batch 1 |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: |\n")
    lines = [f"| {r.engine} | {r.batch} | {r.ms_per_call:.2f} | {r.ms_per_item:.3f} | "
             f"{r.items_per_s_per_core:.1f} | {r.gain:.2f}x |" for r in rows]
    return header + "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: Path) -> None:
    # Loaded here, with the file backend chosen first: a bench run needs no display.
    importlib.import_module("matplotlib").use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    fig, (cost_ax, gain_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine in dict.fromkeys(r.engine for r in rows):
        mine = [r for r in rows if r.engine == engine]
        batches = [r.batch for r in mine]
        cost_ax.plot(batches, [r.ms_per_item for r in mine], marker="o", label=engine)
        gain_ax.plot(batches, [r.gain for r in mine], marker="o", label=engine)
    for ax in (cost_ax, gain_ax):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.grid(True, which="both", alpha=0.3)
    cost_ax.set_yscale("log")
    cost_ax.set_ylabel("ms per item")
    cost_ax.set_title("cost per item")
    gain_ax.set_ylabel("cost at batch 1 / cost here")
    gain_ax.set_title("batching gain")
    gain_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"batches {QUICK_BATCHES} and short timing windows")
    parser.add_argument("--bundle", type=Path, help="a bundle directory (default: generate)")
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny",
                        help="size of generated models (default tiny)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads, as a pinned worker has (default 1)")
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=list(ENGINES),
                        metavar="ENGINE", help=f"subset of: {', '.join(ENGINES)}")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    batches = [b for b in (QUICK_BATCHES if args.quick else FULL_BATCHES) if b <= args.max_batch]
    config = ExecutionConfig(provider=args.provider, intra_op_threads=args.threads)
    notes: list[str] = []
    if _NUMPY_PRELOADED:
        notes.append("numpy was loaded before bench.models: BLAS threads were not limited "
                     "to 1 (set OPENBLAS_NUM_THREADS=1 to compare with a pinned worker)")
    with tempfile.TemporaryDirectory(prefix="vg-bench-models-") as tmp:
        if args.bundle is not None:
            base = args.bundle
            tables = _load_bundle(base)
        else:
            base = Path(tmp)
            tables = _generate(base, args.size, args.seed, notes)
        ctx = Context(tables=tables, base=base, config=config)
        rows = run(ctx, batches, min_seconds=0.05 if args.quick else 0.3,
                   min_calls=2 if args.quick else 5, engines=args.engines, notes=notes)
    text = table_text(rows)
    print(text)
    for note in notes:
        print(f"note: {note}")
    summary = {
        r.engine: round(r.gain, 2) for r in rows if r.batch == max(batches)
    }
    if summary:
        print("batching gain at batch", max(batches), ":",
              ", ".join(f"{k} {v}x" for k, v in summary.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "bench": "models", "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick, "size": args.size if args.bundle is None else None,
        "bundle": str(args.bundle) if args.bundle else None, "provider": args.provider,
        "intra_op_threads": args.threads, "onnxruntime": ort.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "batches": batches, "notes": notes,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "blas_threads_applied": not _NUMPY_PRELOADED,
        "gain_at_max_batch": summary,
    }
    (args.out / "models.json").write_text(
        json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    md = ["# bench models", "", f"{meta['created']}, provider {args.provider}, "
          f"{args.threads} intra-op thread(s), onnxruntime {ort.__version__}, "
          f"{'bundle ' + str(args.bundle) if args.bundle else args.size + ' generated models'}",
          "", text] + [f"- note: {n}" for n in notes]
    (args.out / "models.md").write_text("\n".join(md) + "\n")
    if rows:
        plot(rows, args.out / "models.png")
    print(f"wrote {args.out / 'models.json'}, models.md, models.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The LLM imported from GGUF (SmolLM2-135M-Instruct by default): decode and prefill cost,
int4 against float32, and what the shared system prompt buys in time to first token.

In one run, on one intra-op thread by default (the LLM worker's setting):
- decode step (one new token for each of B sessions, 64 cached tokens each) at
  batch 1, 8, 16 and 32, int4 and float32 graphs;
- prefill of 16, 64 and 256 prompt tokens (batch 1, empty cache);
- time to first token of a 15-token user turn through the engine, starting from the
  shared system prompt's cache and computing it again;
- tokens per second per core (decode tokens over the process's CPU time).

Targets: int4 decode step at batch 1 at most 0.5x float32's; batch 16 step at most 3x
batch 1's; time to first token with the shared prefix at least 3x shorter.

    python -m bench llm [--gguf FILE] [--provider cpu|cuda] [--threads 1] [--quick]

Writes bench/results/llm.json and llm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from voicegate.models.importers.gguf_llm import import_cached
from voicegate.models.llm import LlmEngine, Message, Sampling
from voicegate.models.runtime import ExecutionConfig
from voicegate.models.weights import SMOLLM2_135M

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path.home() / ".cache" / "voicegate" / "bench-llm"
PAST = 64
# 15 tokens with the template's own: "<|im_start|>user\n" ... "<|im_end|>\n<|im_start|>..."
TURN = "Where is my order? I placed it on Monday."
# Instructions as a deployment would write them (about 200 tokens), beside the default
# system prompt (about 35): what the shared prefix saves grows with its length.
INSTRUCTIONS = (
    "You are the phone support assistant of Northwind Home, a store that sells furniture, "
    "kitchenware and small electronics online and in twelve shops. Callers ask about "
    "orders, deliveries, returns, refunds, opening hours and their accounts. Answer in one "
    "or two short sentences of plain spoken English; never use lists, markdown, emoji or "
    "headings, because your words are read aloud. Opening hours: Monday to Saturday nine "
    "to eight, Sunday eleven to five. Deliveries take three to five working days; express "
    "delivery takes one day and costs nine dollars. Returns are free within thirty days "
    "with the receipt or the order number; refunds reach the card within five working "
    "days. For a lost password, the caller can use the reset link on the sign-in page or "
    "ask for a code by text message. Never ask for a full card number or a password. If "
    "you do not know something, say so and offer to connect the caller to a person."
)


def _timed(call: Callable[[], object], *, min_seconds: float, min_calls: int
           ) -> tuple[float, float, int]:
    """Median wall seconds per call, CPU seconds per call, calls."""
    call()  # warm-up: allocations, kernels' first-run set-up
    walls: list[float] = []
    cpu0 = time.process_time()
    began = time.perf_counter()
    while len(walls) < min_calls or time.perf_counter() - began < min_seconds:
        start = time.perf_counter()
        call()
        walls.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / len(walls)
    return statistics.median(walls), cpu, len(walls)


class Graph:
    """Direct calls into one imported model.onnx."""

    def __init__(self, root: Path, config: ExecutionConfig) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads or 1
        options.inter_op_num_threads = 1
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"]
                     if config.provider == "cuda" else ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(root / "llm" / "model.onnx"), options,
                                            providers=providers)
        inputs = {i.name: i for i in self.session.get_inputs()}
        shape = inputs["past_key_values.0.key"].shape
        self.kv_heads, self.head_dim = int(shape[1]), int(shape[3])
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]

    def feeds(self, batch: int, new: int, past: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        feeds: dict[str, np.ndarray] = {
            "input_ids": rng.integers(100, 40000, (batch, new)).astype(np.int64),
            "attention_mask": np.ones((batch, past + new), np.int64),
            "position_ids": np.tile(np.arange(past, past + new, dtype=np.int64), (batch, 1)),
            "logits_to_keep": np.array([1], np.int64),
        }
        cache = (rng.standard_normal((batch, self.kv_heads, past, self.head_dim)) * 0.5
                 ).astype(np.float32)
        for name in self.past_names:
            feeds[name] = cache
        return feeds

    def call(self, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
        return lambda: self.session.run(["logits"], feeds)


def ttft(root: Path, config: ExecutionConfig, *, shared: bool, repeats: int,
         instructions: str | None = None) -> tuple[float, float]:
    """Median seconds (wall, CPU) from ``start`` to the first token of a fresh session's
    turn."""
    engine = LlmEngine.from_table(_table(root), root, config)
    engine.share_system_prompt = shared
    engine.open_session(0)
    system = [Message("system", instructions)] if instructions else []
    engine.start(0, [*system, Message("user", "Hello.")], Sampling(max_tokens=1))
    while engine.running:  # warm-up; with sharing on, it leaves the system prompt cached
        engine.step()
    walls, cpus = [], []
    for sid in range(1, repeats + 1):
        engine.open_session(sid)
        began, cpu = time.perf_counter(), time.process_time()
        engine.start(sid, [*system, Message("user", TURN)], Sampling(max_tokens=1))
        while engine.running:
            engine.step()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
        engine.close_session(sid)
    return statistics.median(walls), statistics.median(cpus)


def _table(root: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415

    table: dict[str, Any] = tomllib.loads((root / "bundle.toml").read_text())["llm"]
    return table


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = ExecutionConfig(provider=args.provider, intra_op_threads=args.threads)
    gguf = args.gguf or SMOLLM2_135M.path()
    roots = {w: import_cached(gguf, args.cache, weights=w) for w in ("int4", "fp32")}
    graphs = {w: Graph(root, config) for w, root in roots.items()}
    min_s, min_calls = (0.3, 3) if args.quick else (1.0, 5)
    decode: dict[str, dict[int, dict[str, float]]] = {"int4": {}, "fp32": {}}
    for weights, graph in graphs.items():
        for batch in args.batches:
            wall, cpu, calls = _timed(graph.call(graph.feeds(batch, 1, PAST)),
                                      min_seconds=min_s, min_calls=min_calls)
            decode[weights][batch] = {"ms": wall * 1e3, "cpu_ms": cpu * 1e3, "calls": calls,
                                      "tokens_per_s_per_core": batch / max(cpu, 1e-9)}
            print(f"  decode {weights} batch {batch:>2}: {wall * 1e3:8.2f} ms",
                  file=sys.stderr, flush=True)
    prefill: dict[str, dict[int, dict[str, float]]] = {"int4": {}, "fp32": {}}
    for weights, graph in graphs.items():
        for length in args.prefill:
            wall, cpu, calls = _timed(graph.call(graph.feeds(1, length, 0)),
                                      min_seconds=min_s, min_calls=min_calls)
            prefill[weights][length] = {"ms": wall * 1e3, "cpu_ms": cpu * 1e3, "calls": calls,
                                        "tokens_per_s_per_core": length / max(cpu, 1e-9)}
            print(f"  prefill {weights} {length:>3} tokens: {wall * 1e3:8.2f} ms",
                  file=sys.stderr, flush=True)
    repeats = 3 if args.quick else 5
    first_token: dict[str, float] = {}
    for label, instructions in (("", None), ("long_", INSTRUCTIONS)):
        with_prefix = ttft(roots["int4"], config, shared=True, repeats=repeats,
                           instructions=instructions)
        without = ttft(roots["int4"], config, shared=False, repeats=repeats,
                       instructions=instructions)
        first_token.update({
            f"{label}shared_prefix_ms": with_prefix[0] * 1e3,
            f"{label}shared_prefix_cpu_ms": with_prefix[1] * 1e3,
            f"{label}no_shared_prefix_ms": without[0] * 1e3,
            f"{label}no_shared_prefix_cpu_ms": without[1] * 1e3,
        })
    probe = LlmEngine.from_table(_table(roots["int4"]), roots["int4"], config)
    first_token["system_tokens"] = len(probe.system_tokens([]))
    first_token["long_system_tokens"] = len(probe.system_tokens(
        [Message("system", INSTRUCTIONS)]))
    # Ratios from CPU time: on a shared machine the wall time also counts the other
    # processes' turns, the CPU time only this one's work (one intra-op thread).
    b1 = {w: decode[w][args.batches[0]]["cpu_ms"] for w in decode}
    targets: dict[str, float] = {
        "int4_over_fp32_decode_b1": b1["int4"] / b1["fp32"],
        "b16_over_b1_int4": (decode["int4"][16]["cpu_ms"] / b1["int4"]
                             if 16 in decode["int4"] else float("nan")),
        "ttft_no_prefix_over_prefix": (first_token["no_shared_prefix_cpu_ms"]
                                       / first_token["shared_prefix_cpu_ms"]),
        "ttft_no_prefix_over_prefix_long": (first_token["long_no_shared_prefix_cpu_ms"]
                                            / first_token["long_shared_prefix_cpu_ms"]),
    }
    return {
        "gguf": str(gguf), "provider": args.provider, "threads": args.threads,
        "cpus": os.cpu_count(), "past_tokens": PAST, "decode": decode, "prefill": prefill,
        "ttft_15_token_turn": first_token, "targets": targets,
        "targets_met": {
            "int4 step b1 <= 0.5x fp32": targets["int4_over_fp32_decode_b1"] <= 0.5,
            "b16 step <= 3x b1": targets["b16_over_b1_int4"] <= 3.0,
            "ttft with prefix >= 3x shorter (default system prompt)":
                targets["ttft_no_prefix_over_prefix"] >= 3.0,
            "ttft with prefix >= 3x shorter (long instructions)":
                targets["ttft_no_prefix_over_prefix_long"] >= 3.0,
        },
    }


def table_text(result: dict[str, Any]) -> str:
    lines = ["| measure | int4 wall ms | int4 CPU ms | fp32 wall ms | fp32 CPU ms | "
             "int4/fp32 (CPU) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]

    def row(label: str, a: dict[str, float], b: dict[str, float]) -> str:
        return (f"| {label} | {a['ms']:.1f} | {a['cpu_ms']:.1f} | {b['ms']:.1f} | "
                f"{b['cpu_ms']:.1f} | {a['cpu_ms'] / b['cpu_ms']:.2f} |")

    for batch, r in result["decode"]["int4"].items():
        lines.append(row(f"decode step, batch {batch}", r, result["decode"]["fp32"][batch]))
    for length, r in result["prefill"]["int4"].items():
        lines.append(row(f"prefill {length} tokens", r, result["prefill"]["fp32"][length]))
    lines += ["", "| tokens/s per core | int4 | fp32 |", "| --- | ---: | ---: |"]
    for batch, r in result["decode"]["int4"].items():
        lines.append(f"| decode, batch {batch} | {r['tokens_per_s_per_core']:.1f} | "
                     f"{result['decode']['fp32'][batch]['tokens_per_s_per_core']:.1f} |")
    for length, r in result["prefill"]["int4"].items():
        lines.append(f"| prefill {length} | {r['tokens_per_s_per_core']:.1f} | "
                     f"{result['prefill']['fp32'][length]['tokens_per_s_per_core']:.1f} |")
    ttft = result["ttft_15_token_turn"]
    lines += ["", "| TTFT, 15-token turn (int4) | wall ms | CPU ms |", "| --- | ---: | ---: |"]
    for label, name in (("", f"default system prompt ({ttft['system_tokens']:.0f} tokens)"),
                        ("long_", f"long instructions ({ttft['long_system_tokens']:.0f} "
                                  "tokens)")):
        lines += [f"| {name}, shared | {ttft[label + 'shared_prefix_ms']:.1f} | "
                  f"{ttft[label + 'shared_prefix_cpu_ms']:.1f} |",
                  f"| {name}, computed again | {ttft[label + 'no_shared_prefix_ms']:.1f} | "
                  f"{ttft[label + 'no_shared_prefix_cpu_ms']:.1f} |"]
    lines.append("")
    for name, met in result["targets_met"].items():
        lines.append(f"- {name}: {'met' if met else 'NOT met'}")
    t = result["targets"]
    lines.append(f"- ratios (CPU time): int4/fp32 step b1 {t['int4_over_fp32_decode_b1']:.2f}, "
                 f"b16/b1 {t['b16_over_b1_int4']:.2f}, "
                 f"TTFT without/with prefix {t['ttft_no_prefix_over_prefix']:.2f} "
                 f"(long instructions {t['ttft_no_prefix_over_prefix_long']:.2f})")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, help="a GGUF file (default: SmolLM2-135M)")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--prefill", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--cache", type=Path, default=CACHE, help="imported bundles")
    parser.add_argument("--quick", action="store_true", help="fewer calls per figure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    result = run(args)
    text = table_text(result)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (args.out / "llm.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

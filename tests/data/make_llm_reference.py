"""Record llama.cpp's choices on the default GGUF LLM, for tests/models/test_gguf_llm.py.

Not part of ``make test``: it needs llama-cpp-python (``pip install llama-cpp-python``
into .venv; it compiles llama.cpp, about 10 minutes on 2 cores). Run from the repo root:

    .venv/bin/python tests/data/make_llm_reference.py

Writes tests/data/llm_reference.json: llama.cpp's tokens and teacher-forced next-token
choices (argmax) over the first positions of the shipped corpus (real support dialogue
text), and its prompts and greedy continuations of five support questions from the
speech manifest, rendered with the file's own chat template and the bundle's default
system prompt. llama.cpp is an independent implementation of the same file: its own
GGUF parser, tokenizer, dequantization and kernels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from voicegate.models.llm import DEFAULT_SYSTEM_PROMPT
from voicegate.models.sp_tokenizer import shipped_corpus
from voicegate.models.weights import SMOLLM2_135M

OUT = Path(__file__).with_name("llm_reference.json")
QUESTIONS = (
    "Can you tell me where my order is? I placed it last Monday.",
    "I forgot my password and I cannot log in to my account.",
    "I would like a refund for the headphones I bought.",
    "What time does the store open tomorrow?",
    "How do I change the delivery address of my order?",
)


def main() -> int:
    from llama_cpp import Llama  # noqa: PLC0415
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=600)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    path = SMOLLM2_135M.path()
    llm = Llama(model_path=str(path), n_ctx=2048, logits_all=True, n_threads=2,
                n_batch=512, verbose=False)

    def argmax_over(tokens: list[int]) -> list[int]:
        llm.reset()
        llm.eval(tokens)
        scores = np.asarray(llm.scores)[: len(tokens)]
        return [int(i) for i in scores.argmax(axis=1)]

    text = ""
    for line in shipped_corpus().splitlines():
        text += line + "\n"
        if len(llm.tokenize(text.encode(), add_bos=False, special=False)) > args.positions:
            break
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)[: args.positions + 1]
    corpus = {"text": text, "tokens": tokens, "next": argmax_over(tokens)}

    metadata = llm.metadata
    formatter = Jinja2ChatFormatter(
        template=metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([int(metadata["tokenizer.ggml.eos_token_id"])],
                                 special=True).decode(),
        bos_token=llm.detokenize([int(metadata["tokenizer.ggml.bos_token_id"])],
                                 special=True).decode(),
    )
    end = {int(metadata["tokenizer.ggml.eos_token_id"]), llm.token_eos()}
    dialogues = []
    for question in QUESTIONS:
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                    {"role": "user", "content": question}]
        prompt_text = formatter(messages=messages).prompt
        prompt = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(prompt)
        generated: list[int] = []
        while len(generated) < args.max_tokens:
            token = int(np.argmax(np.asarray(llm.scores)[len(prompt) + len(generated) - 1]))
            if token in end:
                break
            generated.append(token)
            llm.eval([token])
        dialogues.append({
            "question": question,
            "prompt_text": prompt_text,
            "prompt": prompt,
            "greedy": generated,
            "answer": llm.detokenize(generated).decode("utf-8", "replace"),
        })
        print(f"{question!r} -> {dialogues[-1]['answer']!r}")
    record = {
        "model": path.name,
        "producer": "llama-cpp-python",
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "corpus": corpus,
        "dialogues": dialogues,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(corpus['next'])} corpus positions, "
          f"{len(dialogues)} dialogues")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

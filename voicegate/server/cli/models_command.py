"""``voicegate models synth DIR``, ``voicegate models check DIR``,
``voicegate models import FORMAT SRC OUT`` and ``voicegate models build-default``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from voicegate.models.bundle import STAGES
from voicegate.models.errors import BundleError
from voicegate.models.importers import FORMATS

# The model modules (onnxruntime, onnx, sentencepiece) are imported by the handlers only:
# every `voicegate` command builds this parser, and the gateway must not load them.


def register(subparsers: Any) -> None:
    """Add the ``models`` command to the top-level command parser."""
    models = subparsers.add_parser("models", help="write or validate model bundles")
    commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)

    synth = commands.add_parser(
        "synth", help="write a bundle with seeded random (or scripted) weights"
    )
    synth.add_argument("directory", type=Path)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", choices=("tiny", "base"), default="tiny",
                       help="tiny: fast on a laptop CPU; base: realistic dimensions")
    synth.add_argument("--scripted-reply", metavar="TEXT",
                       help="an LLM that answers every prompt with TEXT")
    synth.add_argument("--scripted-transcript", metavar="TEXT",
                       help="a Whisper decoder that transcribes any audio as TEXT")
    synth.add_argument("--scripted-tts", action="store_true",
                       help="a TTS voice whose audio encodes its input ids")
    synth.add_argument("--stage", action="append", choices=STAGES, dest="stages",
                       help="write only these stages (repeatable; default: all)")
    synth.add_argument("--force", action="store_true", help="replace an existing bundle")
    synth.set_defaults(handler=_synth)

    check = commands.add_parser(
        "check", help="validate a bundle: tensors, parameters, one timed call per model"
    )
    check.add_argument("directory", type=Path)
    check.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu")
    check.add_argument("--threads", type=int, default=1, help="intra-op threads")
    check.add_argument("--stage", action="append", choices=STAGES, dest="stages",
                       help="check only these stages (repeatable; default: all)")
    check.set_defaults(handler=_check)

    build = commands.add_parser(
        "build-default",
        help="build the real default bundle from the installed weight packages (once)",
        description="Assemble the default bundle from the weight packages of "
        "requirements/weights.txt (Silero VAD, Whisper tiny.en, SmolLM2-135M-Instruct, "
        "the Piper voice en_US-joe-medium) into the cache ($VOICEGATE_CACHE, else "
        "~/.cache/voicegate), unless it is already there; print its directory.",
    )
    build.add_argument("--cache", type=Path, help="cache directory (default: as above)")
    build.add_argument("--force", action="store_true", help="build it again")
    build.set_defaults(handler=_build_default)

    importer = commands.add_parser(
        "import", help="convert a model people already have on disk into a bundle stage"
    )
    formats = importer.add_subparsers(dest="import_format", metavar="FORMAT", required=True)
    for name, (module, help_text) in FORMATS.items():
        parser = formats.add_parser(name, help=help_text)
        parser.add_argument("source", type=Path, metavar="SRC")
        parser.add_argument("output", type=Path, metavar="OUT", help="the bundle directory")
        _importer(module).add_arguments(parser)
        parser.set_defaults(handler=_run_importer, importer_module=module)


def _synth(args: argparse.Namespace) -> int:
    from voicegate.models.graphs.synth import Scripted, synth_bundle  # noqa: PLC0415

    scripted = Scripted(reply=args.scripted_reply, transcript=args.scripted_transcript,
                        tts=args.scripted_tts)
    try:
        path = synth_bundle(args.directory, seed=args.seed, size=args.size, scripted=scripted,
                            stages=args.stages or STAGES, overwrite=args.force)
    except (FileExistsError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from voicegate.models.check import check_bundle, format_reports  # noqa: PLC0415
    from voicegate.models.runtime import ExecutionConfig  # noqa: PLC0415

    try:
        config = ExecutionConfig(provider=args.provider, intra_op_threads=args.threads)
        bundle, reports = check_bundle(args.directory, config, args.stages or STAGES)
    except (BundleError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_reports(bundle, reports))
    print("ok")
    return 0


def _build_default(args: argparse.Namespace) -> int:
    from voicegate.models import named_bundles  # noqa: PLC0415

    try:
        directory = named_bundles.real_bundle(args.cache, progress=sys.stderr, force=args.force)
    except (BundleError, RuntimeError, ValueError, OSError) as exc:
        print(f"voicegate models build-default: {exc}", file=sys.stderr)
        return 1
    print(directory)
    return 0


def _importer(module: str) -> Any:
    # The importer modules import only argparse-level names at module scope; their
    # heavy imports (onnx, gguf) happen inside run().
    return importlib.import_module(f"voicegate.models.importers.{module}")


def _run_importer(args: argparse.Namespace) -> int:
    status: int = _importer(args.importer_module).run(args)
    return status

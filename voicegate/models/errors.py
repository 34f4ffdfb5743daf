"""Errors raised while loading or validating a model bundle."""

from __future__ import annotations

from pathlib import Path


class BundleError(Exception):
    """A bundle file is missing or does not match the format its stage expects.

    The message always names the file, and where it applies the tensor, what was
    expected and what was found, so that `voicegate models check` can print it as is.
    """

    def __init__(
        self,
        file: Path | str,
        problem: str,
        *,
        tensor: str | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.tensor = tensor
        self.expected = expected
        self.found = found
        parts = [f"{self.file}: {problem}"]
        if tensor is not None:
            parts.append(f"tensor {tensor!r}")
        if expected is not None or found is not None:
            parts.append(f"expected {expected}, found {found}")
        super().__init__("; ".join(parts))

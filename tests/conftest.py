"""Fixtures every test folder may use: the real bundle, built once per test session.

The real bundle (Whisper tiny.en, SmolLM2-135M, the Piper voice joe-medium, Silero VAD,
from the installed weight packages) takes a while to convert, so it is built once into
``$VOICEGATE_CACHE`` when that is set, else into pytest's cache folder (kept between
runs; keyed by the weights' versions and the converters' code, so a change rebuilds it),
else into a temporary folder for this session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from voicegate.models import named_bundles

# The machine that runs the suite is shared and noisy: how long hypothesis takes to draw
# or run an example says nothing about the code, so neither fails a test.
settings.register_profile(
    "voicegate", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("voicegate")


@pytest.fixture(scope="session")
def real_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("VOICEGATE_CACHE"):
        cache = Path(os.environ["VOICEGATE_CACHE"])
    elif getattr(request.config, "cache", None) is not None:
        cache = Path(request.config.cache.mkdir("voicegate"))
    else:
        cache = tmp_path_factory.mktemp("voicegate-cache")
    return named_bundles.real_bundle(cache)

"""onnxruntime sessions: execution provider choice, threading for pinned workers, IO binding.

CPU is the default. With onnxruntime-gpu installed, ``provider = "cuda"`` (or
``"tensorrt"``) in the configuration selects the GPU; a provider that the installed
onnxruntime lacks is an error at start, never a silent fallback, because a node that
thinks it runs on the GPU but runs on the CPU is rated for the wrong load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from voicegate.models.errors import BundleError

# No usage telemetry from any process that runs a model: ORT_DISABLE_TELEMETRY (set in
# voicegate/__init__.py before onnxruntime loads) stops the POSIX uploader; this call
# stops the events of builds that ignore the variable (Windows ETW).
ort.disable_telemetry_events()

_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class ExecutionConfig:
    """How a worker runs its models."""

    provider: str = "cpu"  # cpu | cuda | tensorrt
    device_id: int = 0
    intra_op_threads: int = 1  # a pinned worker owns its cores: one thread per core it has
    inter_op_threads: int = 1
    provider_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.provider not in _PROVIDER_NAMES:
            raise ValueError(
                f"execution provider {self.provider!r} is not one of {sorted(_PROVIDER_NAMES)}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 lets onnxruntime choose)")

    @property
    def on_gpu(self) -> bool:
        return self.provider != "cpu"

    def providers(self) -> list[str | tuple[str, dict[str, Any]]]:
        """The provider list for InferenceSession, best first, CPU always last."""
        name = _PROVIDER_NAMES[self.provider]
        available = ort.get_available_providers()
        if name not in available:
            raise RuntimeError(
                f"execution provider {self.provider!r} ({name}) is not available in this "
                f"onnxruntime build (available: {', '.join(available)}); "
                "install onnxruntime-gpu for cuda/tensorrt"
            )
        chosen: list[str | tuple[str, dict[str, Any]]] = []
        if self.provider == "tensorrt":
            chosen.append((name, {"device_id": self.device_id, **self.provider_options}))
            chosen.append(("CUDAExecutionProvider", {"device_id": self.device_id}))
        elif self.provider == "cuda":
            chosen.append((name, {"device_id": self.device_id, **self.provider_options}))
        chosen.append("CPUExecutionProvider")
        return chosen


def create_session(path: Path, config: ExecutionConfig | None = None) -> ort.InferenceSession:
    """Open one ONNX model with the worker's execution settings."""
    config = config or ExecutionConfig()
    if not path.is_file():
        raise BundleError(path, "model file not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A pinned worker must not spin idle threads on cores it shares with its neighbours.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=config.providers())
    except (
        ort.capi.onnxruntime_pybind11_state.InvalidGraph,
        ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
        ort.capi.onnxruntime_pybind11_state.Fail,
    ) as exc:
        raise BundleError(path, f"onnxruntime cannot load the model: {exc}") from exc


class BoundRunner:
    """Runs a session through IO binding so that, on a GPU, outputs stay on the device
    between decode steps instead of crossing PCIe on every call. On the CPU it is a plain
    ``run``: IO binding buys nothing there."""

    def __init__(self, session: ort.InferenceSession, config: ExecutionConfig) -> None:
        self.session = session
        self.config = config
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if not self.config.on_gpu:
            result: list[np.ndarray] = self.session.run(self.output_names, dict(feeds))
            return result
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.config.device_id)
        self.session.run_with_iobinding(binding)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs

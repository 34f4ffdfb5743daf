"""A small helper for writing ONNX graphs node by node with seeded random weights.

Used by the STT, TTS and LLM graph builders. Names are generated so that a builder reads
like the model's forward pass; subgraphs (the branches of an ``If``) are builders of their
own that may refer to any value of the enclosing graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET: Final[int] = 17  # LayerNormalization; the opset optimum uses for recent exports
IR_VERSION: Final[int] = 8  # readable by every onnxruntime >= 1.14, GPU builds included

DTYPES: Final[dict[str, int]] = {
    "float32": TensorProto.FLOAT,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}

Dim = int | str | None


class GraphBuilder:
    """Collects nodes, initializers and graph inputs/outputs.

    ``rng`` feeds ``weight``; a graph without random weights needs none."""

    def __init__(
        self, name: str, rng: np.random.Generator | None = None, *, prefix: str = ""
    ) -> None:
        self.name = name
        self.rng = rng
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def output(self, value: str, name: str, dtype: str, shape: Sequence[Dim] | None) -> None:
        """Expose ``value`` as graph output ``name`` (through Identity when they differ)."""
        if value != name:
            self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(
            helper.make_tensor_value_info(
                name, DTYPES[dtype], None if shape is None else list(shape)
            )
        )

    def const(self, value: npt.ArrayLike, hint: str = "const", dtype: Any = None) -> str:
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def weight(self, shape: Sequence[int], hint: str, scale: float | None = None) -> str:
        """A random normal weight; by default scaled by 1/sqrt(fan_in) to keep
        activations near unit size through the layers."""
        if self.rng is None:
            raise ValueError(f"graph {self.name!r} was built without a random generator")
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const(self.rng.standard_normal(shape) * std, hint)

    def op(
        self, op_type: str, *inputs: str, hint: str | None = None, out: str | None = None,
        **attrs: Any,
    ) -> str:
        """Append a node; its output is named ``out``, or a fresh name from ``hint``."""
        output = out or self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def op_multi(self, op_type: str, inputs: Sequence[str], n_out: int, **attrs: Any) -> list[str]:
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    # Frequently used compositions.

    def linear(self, x: str, d_in: int, d_out: int, hint: str, *, bias: bool = True) -> str:
        y = self.op("MatMul", x, self.weight([d_in, d_out], f"{hint}_w"))
        if bias:
            y = self.op("Add", y, self.const(np.zeros(d_out), f"{hint}_b"))
        return y

    def layer_norm(self, x: str, dim: int, hint: str) -> str:
        scale = self.const(np.ones(dim), f"{hint}_g")
        shift = self.const(np.zeros(dim), f"{hint}_b")
        return self.op("LayerNormalization", x, scale, shift, axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        # Erf form: the Gelu op needs opset 20.
        inner = self.op("Erf", self.op("Mul", x, self.const(np.float32(1.0 / np.sqrt(2.0)))))
        half = self.op("Mul", x, self.const(np.float32(0.5)))
        return self.op("Mul", half, self.op("Add", inner, self.const(np.float32(1.0))))

    def graph(self, doc: str = "") -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers,
            doc_string=doc,
        )

    def subgraph(self, name: str) -> GraphBuilder:
        """A builder for an If branch; it shares this builder's random stream."""
        return GraphBuilder(name, self.rng, prefix=f"{self.prefix}{name}/")


def make_model(graph: onnx.GraphProto, *, producer: str) -> onnx.ModelProto:
    """A checked model around ``graph`` at this module's opset and IR version."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=producer,
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(graph: onnx.GraphProto, path: Path, *, producer: str) -> None:
    model = make_model(graph, producer=producer)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))


def attention(
    g: GraphBuilder,
    q: str,
    k: str,
    v: str,
    *,
    head_dim: int,
    mask: str | None = None,
) -> str:
    """Scaled dot-product attention over [B, H, S, hd] queries and [B, H, T, hd] keys and
    values; ``mask`` is additive and broadcasts to [B, H, S, T]."""
    scores = g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2]))
    scores = g.op("Mul", scores, g.const(np.float32(1.0 / np.sqrt(head_dim))))
    if mask is not None:
        scores = g.op("Add", scores, mask)
    return g.op("MatMul", g.op("Softmax", scores, axis=-1), v)


def split_heads(g: GraphBuilder, x: str, n_heads: int, head_dim: int) -> str:
    """[B, S, H*hd] -> [B, H, S, hd]."""
    shaped = g.op("Reshape", x, g.ints([0, 0, n_heads, head_dim]))
    return g.op("Transpose", shaped, perm=[0, 2, 1, 3])


def merge_heads(g: GraphBuilder, x: str, n_heads: int, head_dim: int) -> str:
    """[B, H, S, hd] -> [B, S, H*hd]."""
    moved = g.op("Transpose", x, perm=[0, 2, 1, 3])
    return g.op("Reshape", moved, g.ints([0, 0, n_heads * head_dim]))

"""What every converter needs: one MXNet node's inputs, attributes, constants and fresh names.

mx2onnx calls a converter as ``converter(node, **kwargs)`` with the node's JSON dict; the kwargs
carry ``outputs_lookup`` (name and dtype of every node output converted so far) and
``initializer`` (the graph's constants). A converter returns its ONNX nodes, optionally with the
dtypes of its outputs when they differ from its first input's (mx2onnx assumes the first input's
otherwise, and later converters make their constants of that dtype).
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

TRUE = ("True", "1", "true")

# converter(node, **mx2onnx's kwargs) -> ONNX nodes, or (nodes, output dtypes)
Converter = Callable[..., Any]
# A Slice end meaning "to the end".
END = int(np.iinfo(np.int64).max)


class Emitter:
    """The ONNX nodes one MXNet node becomes. Intermediate names extend the node's name with
    '__', which mx2onnx never takes for an output of the node (it looks for name, name0...)."""

    def __init__(self, node: dict, kwargs: dict) -> None:
        self.name: str = node["name"]
        self.attrs: dict[str, str] = node.get("attrs", {})
        lookup = kwargs["outputs_lookup"]
        entries = [lookup[src][out] for src, out, *_ in node["inputs"]]
        self.inputs: list[str] = [entry.name for entry in entries]
        self.dtypes: list[np.dtype] = [np.dtype(entry.dtype) for entry in entries]
        self.nodes: list[onnx.NodeProto] = []
        self._initializer: list[onnx.TensorProto] = kwargs["initializer"]
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.name}__{hint}{self._count}"

    def const(self, value: Any, dtype: Any = "int64") -> str:
        name = self.fresh("c")
        self._initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """One single-output node; returns its output's name."""
        return self.multi(op_type, *inputs, outs=[out or self.fresh(op_type.lower())], **attrs)[0]

    def multi(self, op_type: str, *inputs: str, outs: Sequence[str], **attrs: Any) -> list[str]:
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outs), name=outs[0],
                                           **attrs))
        return list(outs)

    def attr(self, key: str, default: str) -> str:
        return self.attrs.get(key, default)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.attrs.get(key)
        return default if value is None else value in TRUE

    def ints(self, key: str) -> list[int]:
        """'(1, 2)' / '[3]' / '4' -> [1, 2] / [3] / [4]; absent or 'None' -> []."""
        value = self.attrs.get(key, "None").strip()
        if value in ("None", "", "()", "[]"):
            return []
        parsed = ast.literal_eval(value)
        return [int(v) for v in (parsed if isinstance(parsed, (tuple, list)) else (parsed,))]

    def onnx_type(self, dtype: Any) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    def dim(self, shape: str, index: int) -> str:
        """Dimension ``index`` (negative counts from the end) of a Shape output, as a 1-D
        tensor of one element."""
        stop = index + 1 if index != -1 else END
        return self.op("Slice", shape, self.const([index]), self.const([stop]), self.const([0]))

    def scalar(self, tensor: str) -> str:
        """A 1-element 1-D tensor as a 0-D one (Range takes scalars)."""
        return self.op("Squeeze", tensor, self.const([0]))

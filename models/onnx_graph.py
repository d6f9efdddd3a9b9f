"""Rewrites of an exported ONNX graph into the operators that runtimes and quantizers know best.

torch.onnx's dynamo exporter writes a squeeze-and-excitation unit's pooling (`x.mean((2, 3), keepdim=True)` or
`AdaptiveAvgPool2d(1)`) as ReduceMean over the last two axes. onnxruntime's quantizer has no int8 ReduceMean, so
each one stays a float island between a DequantizeLinear and a QuantizeLinear; GlobalAveragePool computes the same
values and has an int8 kernel.
"""

from __future__ import annotations

from typing import Any

SPATIAL_AXES = ({2, 3}, {-2, -1})


def axes_constants(graph: Any) -> dict[str, list[int]]:
    """The small int64 constants of a graph (initializers and Constant nodes: axes lists) by name."""
    from onnx import TensorProto, numpy_helper

    tensors = {init.name: init for init in graph.initializer}
    tensors.update({node.output[0]: node.attribute[0].t for node in graph.node
                    if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})
    return {name: numpy_helper.to_array(tensor).ravel().tolist() for name, tensor in tensors.items()
            if tensor.data_type == TensorProto.INT64 and len(tensor.dims) <= 1 and sum(tensor.dims) <= 8}


def tensor_ranks(model: Any) -> dict[str, int]:
    """The rank of every graph value whose shape the model records or ONNX shape inference finds."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(model).graph
    return {value.name: len(value.type.tensor_type.shape.dim)
            for value in [*graph.input, *graph.value_info, *graph.output]
            if value.type.tensor_type.HasField("shape")}


def is_spatial_mean(node: Any, constants: dict[str, list[int]], ranks: dict[str, int]) -> bool:
    """Whether a node is a ReduceMean over both spatial axes of a 4-D tensor that keeps the reduced axes."""
    if node.op_type != "ReduceMean" or node.domain not in ("", "ai.onnx") or len(node.input) != 2:
        return False
    keepdims = next((attribute.i for attribute in node.attribute if attribute.name == "keepdims"), 1)
    axes = constants.get(node.input[1])
    return keepdims == 1 and ranks.get(node.input[0]) == 4 and axes is not None and set(axes) in SPATIAL_AXES


def means_to_global_pools(model: Any) -> int:
    """Rewrite, in place, every ReduceMean over the spatial axes (H, W) of a 4-D tensor with keepdims as a
    GlobalAveragePool of the same input and output; drop the axes constants left unused. Return how many."""
    import onnx

    graph = model.graph
    constants, ranks = axes_constants(graph), tensor_ranks(model)
    axes, rewritten = set(), 0
    for index, node in enumerate(list(graph.node)):
        if is_spatial_mean(node, constants, ranks):
            axes.add(node.input[1])
            rewritten += 1
            graph.node.remove(node)
            graph.node.insert(index, onnx.helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                                           name=node.name))
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for init in [init for init in graph.initializer if init.name in axes - used]:
        graph.initializer.remove(init)
    return rewritten

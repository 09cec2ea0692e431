"""Operator categories of a latency breakdown (the EfficientFormer paper's Fig. 2), for PyTorch and ONNX operators.

A profiled operator falls in exactly one category:

==================  ========================================================================================
``stem``            every operator that runs inside the network's stem / patch embedding (whatever its kind)
``convolution``     convolutions (also the downsampling convs between stages)
``linear``          fully connected layers / GEMMs with a weight (``aten::linear``, ONNX ``Gemm``, a ``MatMul``
                    inside an ``nn.Linear``)
``attention``       the attention's activation-by-activation matrix products and its softmax (fused SDPA too)
``normalization``   BatchNorm, LayerNorm, GroupNorm
``activation``      GELU, ReLU, Hardswish, SiLU, ...
``reshape``         reshape, permute, transpose, copy, concat, split, indexing: data movement
``pooling``         average / max / adaptive pooling and the token or spatial mean
``elementwise``     other elementwise arithmetic (residual adds, scaling)
``other``           anything not named above: listed per model (``ModelProfile.unknown_ops``), never dropped
``framework``       no operator: the time *between* operators (Python module calls, dispatch outside operators,
                    ONNX Runtime's executor between nodes), measured on the profiled call's own timeline, the
                    profiler's own cost removed (see :mod:`.torch_profiler`)
==================  ========================================================================================

The stem is told by *where* an operator runs (the profiler's module scope, see :mod:`.structure`); everything else by
the operator's name. Plain Python.
"""

from __future__ import annotations

__all__ = ["CATEGORIES", "FRAMEWORK", "LABELS", "torch_category", "onnx_category", "is_known_torch", "is_known_onnx"]

#: The categories, in the order of tables and figures.
CATEGORIES = ("stem", "convolution", "linear", "attention", "normalization", "activation", "reshape", "pooling",
              "elementwise", "other", "framework")
#: The category of the time between operators (not an operator's).
FRAMEWORK = "framework"
#: How a category is named in tables and figures.
LABELS = {"stem": "patch embedding / stem", "convolution": "convolution", "linear": "linear / GEMM",
          "attention": "attention (matmul + softmax)", "normalization": "normalization (BN, LN)",
          "activation": "activation", "reshape": "reshape / permute / copy", "pooling": "pooling",
          "elementwise": "other elementwise", "other": "other (unknown operators)",
          "framework": "framework (between operators)"}

_TORCH: dict[str, tuple[str, ...]] = {
    "convolution": ("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose2d",
                    "mkldnn_convolution", "_conv_depthwise2d", "thnn_conv2d", "_slow_conv2d_forward",
                    "cudnn_convolution", "_nnpack_spatial_convolution"),
    "linear": ("linear", "addmm", "mm", "_addmm_activation", "mkldnn_linear"),
    "attention": ("matmul", "bmm", "baddbmm", "einsum", "softmax", "_softmax", "log_softmax",
                  "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
                  "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                  "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_attention_math"),
    "normalization": ("batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training", "layer_norm",
                      "native_layer_norm", "group_norm", "native_group_norm", "instance_norm", "rms_norm",
                      "_batch_norm_impl_index", "_fused_rms_norm"),
    "activation": ("gelu", "gelu_", "relu", "relu_", "relu6", "hardswish", "hardswish_", "hardsigmoid",
                   "hardsigmoid_", "silu", "silu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_",
                   "leaky_relu", "leaky_relu_", "elu", "elu_", "mish", "mish_", "clamp_min", "clamp_min_", "glu",
                   "softplus", "prelu", "_prelu_kernel"),
    "reshape": ("view", "view_as", "reshape", "reshape_as", "_reshape_alias", "permute", "transpose", "transpose_",
                "t", "flatten",
                "unflatten", "contiguous", "clone", "copy_", "to", "_to_copy", "expand", "expand_as", "squeeze",
                "squeeze_", "unsqueeze", "unsqueeze_", "cat", "concat", "stack", "chunk", "split", "split_with_sizes",
                "unbind", "select", "slice", "narrow", "index", "index_select", "gather", "as_strided", "detach",
                "alias", "empty", "empty_like", "zeros", "zeros_like", "ones", "new_zeros", "new_empty",
                "constant_pad_nd", "pad", "roll", "repeat", "repeat_interleave", "pixel_shuffle", "movedim",
                "swapaxes", "resize_", "_unsafe_view", "lift_fresh", "tensor_split", "fill_", "zero_"),
    "pooling": ("avg_pool1d", "avg_pool2d", "max_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool1d",
                "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean", "max_pool1d",
                "mkldnn_adaptive_avg_pool2d"),
    "elementwise": ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "sqrt", "rsqrt",
                    "pow", "exp", "abs", "addcmul", "where", "clamp", "clamp_", "dropout", "feature_dropout",
                    "sum", "floor", "round", "reciprocal", "square", "maximum", "minimum", "erf", "lerp"),
}
_TORCH_INDEX = {op: category for category, ops in _TORCH.items() for op in ops}

_ONNX: dict[str, tuple[str, ...]] = {
    "convolution": ("Conv", "FusedConv", "NhwcConv", "ConvTranspose", "QLinearConv"),
    "linear": ("Gemm", "FusedGemm"),
    "attention": ("MatMul", "FusedMatMul", "Softmax", "Attention", "MultiHeadAttention", "MatMulScale",
                  "LogSoftmax", "Einsum"),
    "normalization": ("BatchNormalization", "LayerNormalization", "SkipLayerNormalization",
                      "SimplifiedLayerNormalization", "GroupNormalization", "InstanceNormalization",
                      "SkipSimplifiedLayerNormalization"),
    "activation": ("Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Relu", "HardSwish", "HardSigmoid", "Sigmoid",
                   "Tanh", "Clip", "LeakyRelu", "Elu", "Mish", "Softplus", "PRelu", "Erf"),
    "reshape": ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Gather",
                "GatherElements", "Expand", "Identity", "Cast", "Shape", "ReorderInput", "ReorderOutput",
                "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "ConstantOfShape", "Range", "ScatterND"),
    "pooling": ("AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean"),
    "elementwise": ("Add", "Sub", "Mul", "Div", "Neg", "Sqrt", "Pow", "Exp", "Abs", "Where", "ReduceSum",
                    "Reciprocal", "Max", "Min", "Dropout", "BiasAdd", "Equal"),
}
_ONNX_INDEX = {op: category for category, ops in _ONNX.items() for op in ops}


def _aten_name(name: str) -> str:
    return name.split("::", 1)[1] if "::" in name else name


def is_known_torch(name: str) -> bool:
    """Whether a PyTorch operator (``aten::linear``) has a category of its own."""
    return _aten_name(name) in _TORCH_INDEX


def torch_category(name: str, in_stem: bool = False) -> str:
    """The category of a PyTorch operator (``aten::conv2d``), or ``"stem"`` inside the stem; unknown ones:
    ``"other"``."""
    if in_stem:
        return "stem"
    return _TORCH_INDEX.get(_aten_name(name), "other")


def is_known_onnx(op_type: str) -> bool:
    """Whether an ONNX / ONNX Runtime operator type (``Conv``, ``FusedMatMul``) has a category of its own."""
    return op_type in _ONNX_INDEX


def onnx_category(op_type: str, in_stem: bool = False, in_linear: bool = False) -> str:
    """The category of an ONNX Runtime node: ``"stem"`` inside the stem, ``"linear"`` for a matrix product inside an
    ``nn.Linear`` (ONNX exports a 3D linear as ``MatMul`` + ``Add``), else by its type; unknown ones: ``"other"``."""
    if in_stem:
        return "stem"
    category = _ONNX_INDEX.get(op_type, "other")
    if in_linear and category in ("attention", "elementwise"):
        return "linear"
    return category

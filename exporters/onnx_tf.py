"""A small ONNX -> TensorFlow translator: the fallback route for ONNX -> SavedModel / TFLite.

onnx2tf 1.28 breaks on Keras 3 / TF 2.21 for transformers and recurrent nets and onnx-tf is
dead (onnx.mapping is gone), so this module follows onnx-tf's backend design without its
baggage: `translate(model)` returns a plain Python function that, called (typically while
traced inside a `tf.function` with dynamic input shapes), emits the TF ops of each ONNX node in
graph order. Nothing is baked to a batch size or sequence length: shape math stays as int64
tensor ops, so the caller's `input_signature` decides what is dynamic.

    fn = translate(onnx.load(path))
    outputs = fn(input_ids=ids, attention_mask=mask)   # {onnx output name: tf.Tensor}

Unsupported operators raise `UnsupportedOp` at translate time (unknown op type) or at the first
trace (unsupported attribute or a non-constant axes/pads input), naming op type and node.

Semantics follow the ONNX spec for opsets 11-18 (torch.onnx.export gives 17, dynamo 18).
Supported operators:
  elementwise  Add Sub Mul Div (integer Div truncates) Pow Sqrt Reciprocal Neg Exp Log Abs
               Erf (a builtin-only polynomial, |error| < 4e-7, since TFLite has no Erf kernel)
               Floor Ceil Tanh Sigmoid Relu LeakyRelu Clip HardSigmoid HardSwish Min Max Sum
               Equal Less LessOrEqual Greater GreaterOrEqual And Or Xor Not IsNaN Where Cast
               Identity Dropout (inference)
  shape        Shape Size Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather
               GatherElements Expand Tile ConstantOfShape Range Constant Pad (constant, reflect)
  math / nn    MatMul Gemm Einsum Softmax LogSoftmax LayerNormalization BatchNormalization
               ReduceMean ReduceSum ReduceMax ReduceMin ReduceProd CumSum
               Conv (1D/2D, groups, depthwise, auto_pad) MaxPool AveragePool GlobalAveragePool
               GlobalMaxPool (NCHW in and out; NHWC only inside, for tf.nn)
  recurrent    LSTM GRU (forward / reverse / bidirectional, layout 0 and 1, default activations,
               no sequence_lens / peepholes / clip), as a tf.while_loop: sequence stays dynamic
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import onnx
import tensorflow as tf
from onnx import helper, numpy_helper
from tensorflow.python.framework import tensor_util  # constant_value_as_shape: partial shapes


class UnsupportedOp(Exception):
    def __init__(self, op_type: str, node_name: str, detail: str = ""):
        self.op_type, self.node_name = op_type, node_name
        msg = f"operator {op_type} (node {node_name or '<unnamed>'}) has no TF translation"
        super().__init__(msg + (f": {detail}" if detail else ""))


class _Node:
    """What a handler sees: input tensors (None for omitted optional ones), attributes, opset."""

    def __init__(self, proto: onnx.NodeProto, ins: list, opset: int):
        self.proto, self.ins, self.opset = proto, ins, opset
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self.n_out = len(proto.output)

    def attr(self, name, default=None):
        v = self.attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else v

    def input(self, i):
        return self.ins[i] if i < len(self.ins) else None

    def static(self, i):
        """numpy value of input i (axes, pads, split sizes...): it must fold to a constant."""
        t = self.input(i)
        if t is None:
            return None
        v = tf.get_static_value(t)
        if v is None:
            raise self.unsupported(f"input {i} ({self.proto.input[i]}) is not a constant")
        return v

    def unsupported(self, detail: str) -> UnsupportedOp:
        return UnsupportedOp(self.proto.op_type, self.proto.name, detail)


_OPS: dict[str, Callable[[_Node], object]] = {}


def _op(*names):
    def register(f):
        for name in names:
            _OPS[name] = f
        return f
    return register


def _dtype(onnx_enum: int) -> tf.DType:
    return tf.as_dtype(helper.tensor_dtype_to_np_dtype(onnx_enum))


def _shape(x) -> tf.Tensor:
    return tf.shape(x, out_type=tf.int64)  # ONNX shape math is int64 throughout


def _axes(n: _Node, rank: int, input_index: int):
    """Axes from the attribute (older opsets) or the input (newer), normalised to >= 0."""
    axes = n.attr("axes")
    if axes is None and n.input(input_index) is not None:
        axes = n.static(input_index).reshape(-1).tolist()
    return None if axes is None else [int(a) % rank for a in axes]


# --- elementwise -------------------------------------------------------------------------------
def _erf(x):
    """erf from builtin-only ops: TFLite has no Erf kernel, and exact GELU (BERT, ViT) needs it.
    Numerical Recipes' erfc Chebyshev fit, fractional error < 1.2e-7: float32 round-off level."""
    z = tf.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418,
              0.37409196, 1.00002368, -1.26551223):
        poly = c + t * poly
    erfc = t * tf.exp(-z * z + poly)
    return tf.where(x >= 0, 1.0 - erfc, erfc - 1.0)


_UNARY = {
    "Sqrt": tf.sqrt, "Reciprocal": tf.math.reciprocal, "Neg": tf.negative, "Exp": tf.exp,
    "Log": tf.math.log, "Abs": tf.abs, "Erf": _erf, "Floor": tf.floor, "Ceil": tf.math.ceil,
    "Tanh": tf.tanh, "Sigmoid": tf.sigmoid, "Relu": tf.nn.relu, "Not": tf.logical_not,
    "Identity": tf.identity,
    "IsNaN": lambda x: tf.not_equal(x, x),  # no IsNan builtin in TFLite; NaN != NaN is exact
}
_BINARY = {
    "Add": tf.add, "Sub": tf.subtract, "Mul": tf.multiply, "Equal": tf.equal, "Less": tf.less,
    "LessOrEqual": tf.less_equal, "Greater": tf.greater, "GreaterOrEqual": tf.greater_equal,
    "And": tf.logical_and, "Or": tf.logical_or, "Xor": tf.math.logical_xor,
}
for _name, _f in _UNARY.items():
    _OPS[_name] = functools.partial(lambda f, n: f(n.ins[0]), _f)
for _name, _f in _BINARY.items():
    _OPS[_name] = functools.partial(lambda f, n: f(n.ins[0], n.ins[1]), _f)


@_op("Div")
def _div(n):
    a, b = n.ins
    if not a.dtype.is_integer:
        return a / b
    # ONNX integer Div truncates toward zero (C semantics); TF's floordiv rounds down, and
    # TruncateDiv has no TFLite builtin, so correct floordiv where the signs differ.
    q = tf.math.floordiv(a, b)
    return q + tf.cast(tf.logical_and(tf.not_equal(q * b, a), tf.not_equal(a < 0, b < 0)), q.dtype)


@_op("Pow")
def _pow(n):
    return tf.pow(n.ins[0], tf.cast(n.ins[1], n.ins[0].dtype))  # exponent may be another dtype


@_op("Min", "Max", "Sum")
def _variadic(n):
    f = {"Min": tf.minimum, "Max": tf.maximum, "Sum": tf.add}[n.proto.op_type]
    return functools.reduce(f, n.ins)


@_op("Clip")
def _clip(n):
    x, lo, hi = n.ins[0], n.input(1), n.input(2)
    if n.opset < 11:  # min/max were attributes before opset 11
        lo, hi = n.attr("min"), n.attr("max")
    if lo is not None:
        x = tf.maximum(x, tf.cast(lo, x.dtype))
    if hi is not None:
        x = tf.minimum(x, tf.cast(hi, x.dtype))
    return x


_OPS["LeakyRelu"] = lambda n: tf.nn.leaky_relu(n.ins[0], n.attr("alpha", 0.01))
_OPS["HardSigmoid"] = lambda n: tf.clip_by_value(
    n.attr("alpha", 0.2) * n.ins[0] + n.attr("beta", 0.5), 0.0, 1.0)
_OPS["HardSwish"] = lambda n: n.ins[0] * tf.nn.relu6(n.ins[0] + 3.0) / 6.0
_OPS["Where"] = lambda n: tf.where(*n.ins)  # where_v2 broadcasts like ONNX
_OPS["Cast"] = lambda n: tf.cast(n.ins[0], _dtype(n.attr("to")))
_OPS["Dropout"] = lambda n: (n.ins[0], tf.ones_like(n.ins[0], tf.bool))[: n.n_out]


@_op("Constant")
def _constant(n):
    for key, conv in (("value", numpy_helper.to_array), ("value_float", np.float32),
                      ("value_floats", lambda v: np.array(v, np.float32)),
                      ("value_int", np.int64), ("value_ints", lambda v: np.array(v, np.int64))):
        if key in n.attrs:
            return tf.constant(conv(n.attrs[key]))
    raise n.unsupported(f"attributes {sorted(n.attrs)}")


# --- shapes ------------------------------------------------------------------------------------
@_op("Shape")
def _shape_op(n):
    rank = n.ins[0].shape.rank
    start, end = n.attr("start", 0), n.attr("end", rank)
    return _shape(n.ins[0])[slice(*(max(min(i, rank), -rank) for i in (start, end)))]


_OPS["Size"] = lambda n: tf.size(n.ins[0], out_type=tf.int64)
_OPS["Transpose"] = lambda n: tf.transpose(
    n.ins[0], n.attr("perm", list(range(n.ins[0].shape.rank))[::-1]))
_OPS["Concat"] = lambda n: tf.concat(n.ins, axis=n.attr("axis"))
_OPS["Tile"] = lambda n: tf.tile(n.ins[0], n.ins[1])
_OPS["Range"] = lambda n: tf.range(*n.ins)
# Expand broadcasts both ways (a [3,1] tensor expanded to [1,4] is [3,4]), unlike broadcast_to.
_OPS["Expand"] = lambda n: tf.broadcast_to(
    n.ins[0], tf.broadcast_dynamic_shape(_shape(n.ins[0]), tf.cast(n.ins[1], tf.int64)))


@_op("Reshape")
def _reshape(n):
    x, shape = n.ins
    allowzero = n.attr("allowzero", 0)
    v = tf.get_static_value(shape)
    if v is not None:  # usual case: 0 means "copy that input dim", static where possible
        dims = [(x.shape[i] if x.shape[i] is not None else _shape(x)[i])
                if d == 0 and not allowzero else d for i, d in enumerate(v.tolist())]
        if any(isinstance(d, tf.Tensor) for d in dims):
            dims = tf.stack([tf.cast(d, tf.int64) for d in dims])
        return tf.reshape(x, dims)
    # shape computed at run time (Shape -> Gather -> Concat): apply the 0 rule with tf.where,
    # then restore the static dims TF would have inferred without it.
    k = shape.shape[0]
    if not allowzero:
        src = tf.pad(_shape(x), [[0, max(0, k - x.shape.rank)]])[:k]
        shape = tf.where(tf.equal(shape, 0), src, shape)
    partial = tensor_util.constant_value_as_shape(n.ins[1]).as_list()
    y = tf.reshape(x, shape)
    y.set_shape([x.shape[i] if d == 0 and not allowzero else (d if d and d > 0 else None)
                 for i, d in enumerate(partial)])
    return y


@_op("Flatten")
def _flatten(n):
    x, axis = n.ins[0], n.attr("axis", 1)
    axis += x.shape.rank if axis < 0 else 0  # in [-r, r]: axis == r gives [prod, 1]
    tail = x.shape[axis:].num_elements()
    if axis == 0:
        return tf.reshape(x, [1, -1])
    if tail is not None:  # keep the static feature size (a Gemm usually follows)
        return tf.reshape(x, [-1, tail])
    return tf.reshape(x, tf.stack([tf.reduce_prod(_shape(x)[:axis]), -1]))


@_op("Unsqueeze")
def _unsqueeze(n):
    x, axes = n.ins[0], n.attr("axes")
    axes = axes if axes is not None else n.static(1).reshape(-1).tolist()
    for a in sorted(int(a) % (x.shape.rank + len(axes)) for a in axes):
        x = tf.expand_dims(x, a)
    return x


@_op("Squeeze")
def _squeeze(n):
    axes = _axes(n, n.ins[0].shape.rank, 1)
    return tf.squeeze(n.ins[0], axes)  # no axes: all size-1 dims (must be static)


@_op("Split")
def _split(n):
    x, axis = n.ins[0], n.attr("axis", 0)
    sizes = n.static(1) if n.input(1) is not None else n.attr("split")
    if sizes is not None:
        return tf.split(x, list(np.reshape(sizes, -1)), axis=axis)
    parts, dim = n.attr("num_outputs", n.n_out), x.shape[axis]
    if dim is None or dim % parts == 0:
        return tf.split(x, parts, axis=axis)
    chunk = -(-dim // parts)  # opset 18: uneven split, the last chunk is smaller
    return tf.split(x, [chunk] * (parts - 1) + [dim - chunk * (parts - 1)], axis=axis)


@_op("Slice")
def _slice(n):
    x, rank = n.ins[0], n.ins[0].shape.rank
    if n.opset < 10:
        starts, ends, axes, steps = n.attr("starts"), n.attr("ends"), n.attr("axes"), None
    else:
        starts, ends = n.ins[1], n.ins[2]
        axes, steps = _axes(n, rank, 3), n.static(4)
    k = len(starts) if isinstance(starts, list) else starts.shape[0]
    axes = [a % rank for a in (axes if axes is not None else range(k))]
    steps = [1] * k if steps is None else [int(s) for s in steps]
    lim = 2**31 - 1  # ONNX ends are often INT64_MAX/MIN: clamp so int32 (TFLite) indices work
    starts, ends = (tf.cast(tf.clip_by_value(tf.cast(t, tf.int64), -lim, lim), tf.int32)
                    for t in (starts, ends))
    begin, end, stride = [0] * rank, [0] * rank, [1] * rank
    mask = (1 << rank) - 1  # begin/end masks: untouched axes take their whole range
    for j, a in enumerate(axes):
        begin[a], end[a], stride[a] = starts[j], ends[j], steps[j]
        mask &= ~(1 << a)
    return tf.strided_slice(x, tf.stack(begin), tf.stack(end), stride,
                            begin_mask=mask, end_mask=mask)


@_op("Gather")
def _gather(n):
    x, idx, axis = n.ins[0], n.ins[1], n.attr("axis", 0) % n.ins[0].shape.rank
    v = tf.get_static_value(idx)
    if v is not None and (v >= 0).all():
        idx = tf.constant(v)
    else:  # negative indices count from the end of the axis
        dim = tf.cast(tf.shape(x)[axis], idx.dtype)
        idx = tf.where(idx < 0, idx + dim, idx)
    return tf.gather(x, idx, axis=axis)


@_op("GatherElements")
def _gather_elements(n):
    x, idx = n.ins
    rank, axis = x.shape.rank, n.attr("axis", 0) % x.shape.rank
    idx = tf.cast(idx, tf.int64)
    idx = tf.where(idx < 0, idx + _shape(x)[axis], idx)
    # full coordinates: the index grid of `idx`, with the gather axis replaced by idx itself
    grid = tf.meshgrid(*[tf.range(_shape(idx)[i]) for i in range(rank)], indexing="ij")
    grid[axis] = idx
    return tf.gather_nd(x, tf.stack(grid, axis=-1))


@_op("ConstantOfShape")
def _constant_of_shape(n):
    value = n.attrs.get("value")
    value = numpy_helper.to_array(value).reshape(()) if value is not None else np.float32(0)
    return tf.fill(tf.cast(n.ins[0], tf.int64), tf.constant(value))


@_op("Pad")
def _pad(n):
    x, rank, mode = n.ins[0], n.ins[0].shape.rank, n.attr("mode", "constant")
    pads = n.attr("pads") if n.opset < 11 else n.static(1).tolist()
    value = n.attr("value", 0.0) if n.opset < 11 else n.input(2)
    axes = _axes(n, rank, 3) or list(range(rank))
    k = len(axes)
    full = [[0, 0] for _ in range(rank)]
    for j, a in enumerate(axes):
        full[a] = [pads[j], pads[j + k]]
    if min(pads) < 0 or mode not in ("constant", "reflect"):
        raise n.unsupported(f"mode={mode} pads={pads}")
    if mode == "reflect":
        return tf.pad(x, full, "REFLECT")
    value = tf.zeros((), x.dtype) if value is None else tf.reshape(tf.cast(value, x.dtype), [])
    return tf.pad(x, full, constant_values=value)


# --- linear algebra, normalisation, reductions ------------------------------------------------
@_op("MatMul")
def _matmul(n):
    a, b = n.ins
    # numpy semantics: 1-D operands are promoted to matrices and the extra dim dropped again
    ya = tf.expand_dims(a, 0) if a.shape.rank == 1 else a
    yb = tf.expand_dims(b, -1) if b.shape.rank == 1 else b
    y = tf.matmul(ya, yb)  # batch dims broadcast (BatchMatMulV3)
    if b.shape.rank == 1:
        y = tf.squeeze(y, -1)
    return tf.squeeze(y, -2) if a.shape.rank == 1 else y


@_op("Gemm")
def _gemm(n):
    a, b, c = n.ins[0], n.ins[1], n.input(2)
    y = tf.matmul(a, b, transpose_a=bool(n.attr("transA", 0)), transpose_b=bool(n.attr("transB", 0)))
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    y = y if alpha == 1.0 else alpha * y
    return y if c is None else y + (c if beta == 1.0 else beta * c)


_OPS["Einsum"] = lambda n: tf.einsum(n.attr("equation").replace(" ", ""), *n.ins)
# RoBERTa-style position ids (cumsum of the padding mask); axis is a 0-d tensor input.
_OPS["CumSum"] = lambda n: tf.math.cumsum(n.ins[0], axis=tf.reshape(n.ins[1], []),
                                          exclusive=bool(n.attr("exclusive", 0)),
                                          reverse=bool(n.attr("reverse", 0)))


@_op("Softmax", "LogSoftmax")
def _softmax(n):
    f = tf.nn.softmax if n.proto.op_type == "Softmax" else tf.nn.log_softmax
    x = n.ins[0]
    if n.opset >= 13:
        return f(x, axis=n.attr("axis", -1))
    # before opset 13 the input is coerced to 2-D at `axis` and normalised over the tail
    axis = n.attr("axis", 1) % x.shape.rank
    flat = tf.reshape(x, tf.stack([tf.reduce_prod(_shape(x)[:axis]), -1]))
    return tf.ensure_shape(tf.reshape(f(flat, axis=-1), _shape(x)), x.shape)


@_op("LayerNormalization")
def _layer_norm(n):
    x, scale, bias = n.ins[0], n.ins[1], n.input(2)
    axes = list(range(n.attr("axis", -1) % x.shape.rank, x.shape.rank))
    mean = tf.reduce_mean(x, axes, keepdims=True)
    centred = x - mean
    inv_std = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axes, keepdims=True)
                            + n.attr("epsilon", 1e-5))
    y = centred * inv_std * scale
    return (y if bias is None else y + bias), mean, inv_std


@_op("BatchNormalization")
def _batch_norm(n):
    x, scale, bias, mean, var = n.ins[:5]
    shape = [-1] + [1] * (x.shape.rank - 2)  # per channel, NCHW
    k = scale * tf.math.rsqrt(var + n.attr("epsilon", 1e-5))  # folded to one mul + add
    return x * tf.reshape(k, shape) + tf.reshape(bias - mean * k, shape)


_REDUCE = {"ReduceMean": tf.reduce_mean, "ReduceSum": tf.reduce_sum, "ReduceMax": tf.reduce_max,
           "ReduceMin": tf.reduce_min, "ReduceProd": tf.reduce_prod}


@_op(*_REDUCE)
def _reduce(n):
    x = n.ins[0]
    axes = _axes(n, x.shape.rank, 1)
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.shape.rank))
    return _REDUCE[n.proto.op_type](x, axes, keepdims=bool(n.attr("keepdims", 1)))


# --- convolution and pooling (NCHW outside, NHWC for tf.nn) -----------------------------------
def _spatial(n, x, kernel):
    """x as NHWC 2-D (1-D inputs get a unit H) with ONNX pads applied, plus strides/dilations."""
    d = x.shape.rank - 2
    if d not in (1, 2):
        raise n.unsupported(f"{d}-D input")
    lift = (lambda v: [1] + list(v)) if d == 1 else list
    strides, dil = lift(n.attr("strides", [1] * d)), lift(n.attr("dilations", [1] * d))
    kernel, pads, auto = lift(kernel), n.attr("pads", [0] * 2 * d), n.attr("auto_pad", "NOTSET")
    x = tf.transpose(x, [0, 2, 1] if d == 1 else [0, 2, 3, 1])
    if d == 1:
        x, pads = tf.expand_dims(x, 1), [0, pads[0], 0, pads[1]]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 4
        for i in range(2):  # total = what keeps ceil(in / stride) outputs; odd extra goes last
            size = x.shape[1 + i]
            if size is None:
                raise n.unsupported("auto_pad with a dynamic spatial size")
            total = max((-(-size // strides[i]) - 1) * strides[i]
                        + (kernel[i] - 1) * dil[i] + 1 - size, 0)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[i], pads[i + 2] = lo, total - lo
    elif auto == "VALID":
        pads = [0] * 4
    return x, [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], strides, dil, d


def _back(y, d):  # NHWC -> NCHW (or N1WC -> NCW)
    return tf.transpose(y[:, 0], [0, 2, 1]) if d == 1 else tf.transpose(y, [0, 3, 1, 2])


@_op("Conv")
def _conv(n):
    x, w, b = n.ins[0], n.ins[1], n.input(2)
    x, pads, strides, dil, d = _spatial(n, x, w.shape[2:])
    if any(p for pair in pads for p in pair):
        x = tf.pad(x, pads)
    if d == 1:
        w = tf.expand_dims(w, 2)
    group, c_in, out = n.attr("group", 1), x.shape[-1], w.shape[0]
    # TF refuses strides > 1 together with dilations > 1: convolve densely, subsample after
    subsample = strides if max(strides) > 1 and max(dil) > 1 else None
    strides = [1, 1] if subsample else strides
    if group > 1 and group == c_in:
        # depthwise: ONNX [C*m, 1, kh, kw] -> TF [kh, kw, C, m] (TF output channel c*m + j too)
        filt = tf.reshape(tf.transpose(w, [2, 3, 1, 0]), [w.shape[2], w.shape[3], c_in, out // c_in])
        y = tf.nn.depthwise_conv2d(x, filt, [1, *strides, 1], "VALID", dilations=dil)
    else:
        # TF has no grouped conv on CPU: one conv per group, concatenated on channels
        xs, ws = tf.split(x, group, axis=-1), tf.split(w, group, axis=0)
        y = tf.concat([tf.nn.convolution(xi, tf.transpose(wi, [2, 3, 1, 0]), strides, "VALID",
                                         dilations=dil) for xi, wi in zip(xs, ws)], axis=-1)
    if subsample:
        y = y[:, :: subsample[0], :: subsample[1]]
    if b is not None:
        y = y + b
    return _back(y, d)


@_op("MaxPool", "AveragePool")
def _pool(n):
    if n.attr("ceil_mode", 0) or n.n_out > 1 or any(v != 1 for v in n.attr("dilations", [1])):
        raise n.unsupported("ceil_mode, dilations and the Indices output are not supported")
    x, pads, strides, _, d = _spatial(n, n.ins[0], n.attr("kernel_shape"))
    ksize = ([1] if d == 1 else []) + n.attr("kernel_shape")
    padded = any(p for pair in pads for p in pair)
    if n.proto.op_type == "MaxPool":
        if padded:
            x = tf.pad(x, pads, constant_values=x.dtype.min)
        return _back(tf.nn.max_pool2d(x, ksize, strides, "VALID"), d)
    y = tf.nn.avg_pool2d(tf.pad(x, pads) if padded else x, ksize, strides, "VALID")
    if padded and not n.attr("count_include_pad", 0):  # divide by the real elements per window
        y = y / tf.nn.avg_pool2d(tf.pad(tf.ones_like(x[:1, ..., :1]), pads), ksize, strides, "VALID")
    return _back(y, d)


_OPS["GlobalAveragePool"] = lambda n: tf.reduce_mean(
    n.ins[0], list(range(2, n.ins[0].shape.rank)), keepdims=True)
_OPS["GlobalMaxPool"] = lambda n: tf.reduce_max(
    n.ins[0], list(range(2, n.ins[0].shape.rank)), keepdims=True)


# --- recurrent -------------------------------------------------------------------------------
def _recur(step, xw, init):
    """Run step(state, xw[t]) over t; returns (first state of every step [seq, ...], final state).

    A tf.while_loop whose loop variables keep one shape: the per-step outputs go into a
    preallocated [seq, batch, hidden] tensor via a one-hot select. tf.scan (TensorList
    accumulators) is O(seq) but TFLite can only lower TensorLists with a static element
    shape, i.e. a fixed batch; the select is O(seq^2) work, negligible for the short sequences
    served here, and converts to builtin WHILE with batch and sequence both dynamic."""
    n = tf.shape(xw)[0]
    ys = tf.zeros(tf.concat([[n], tf.shape(init[0])], 0), xw.dtype)

    def body(t, ys, *state):
        state = step(state, tf.gather(xw, t))
        return (t + 1, tf.where(tf.equal(tf.range(n), t)[:, None, None], state[0][None], ys),
                *state)

    out = tf.while_loop(lambda t, *_: t < n, body, (tf.constant(0), ys, *init))
    return out[1], out[2:]


@_op("LSTM", "GRU")
def _rnn(n):
    lstm = n.proto.op_type == "LSTM"
    X, W, R, B = n.ins[0], n.ins[1], n.ins[2], n.input(3)
    h0, c0 = n.input(5), n.input(6) if lstm else None
    if n.input(4) is not None or n.input(7) is not None or n.attr("clip") is not None:
        raise n.unsupported("sequence_lens, peepholes and clip are not supported")
    default = ["Sigmoid", "Tanh", "Tanh"] if lstm else ["Sigmoid", "Tanh"]
    acts = [a.decode() if isinstance(a, bytes) else a for a in n.attr("activations", [])]
    if acts and acts != default * (len(acts) // len(default)) or n.attr("input_forget", 0):
        raise n.unsupported(f"activations {acts} / input_forget")
    layout, hidden = n.attr("layout", 0), n.attr("hidden_size")
    if layout:  # batch-first: run time-major internally
        X = tf.transpose(X, [1, 0, 2])
        h0, c0 = (None if s is None else tf.transpose(s, [1, 0, 2]) for s in (h0, c0))
    direction = n.attr("direction", "forward")
    gates, lbr = (4 if lstm else 3), n.attr("linear_before_reset", 0)
    zeros = tf.zeros(tf.stack([tf.shape(X)[1], hidden]), X.dtype)
    ys, hs, cs = [], [], []
    for d in range(2 if direction == "bidirectional" else 1):
        reverse = direction == "reverse" or d == 1
        b = B[d] if B is not None else tf.zeros([2 * gates * hidden], X.dtype)
        wb, rb, r_t = b[: gates * hidden], b[gates * hidden:], tf.transpose(R[d])
        # the input projection of every step at once; only h @ R stays inside the loop
        xw = tf.matmul(X, W[d], transpose_b=True) + wb
        xw = tf.reverse(xw, [0]) if reverse else xw

        if lstm:  # gate order i o f c
            def step(state, xw_t, r_t=r_t, rb=rb):
                h, c = state
                i, o, f, g = tf.split(xw_t + tf.matmul(h, r_t) + rb, 4, axis=-1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                return tf.sigmoid(o) * tf.tanh(c), c
        else:  # gate order z r h
            def step(state, xw_t, r_t=r_t, rb=rb):
                h = state[0]
                xz, xr, xh = tf.split(xw_t, 3, axis=-1)
                hz, hr, hh = tf.split(tf.matmul(h, r_t) + rb, 3, axis=-1)
                z, r = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
                if lbr:  # torch's GRU: reset gate applied after the recurrent matmul
                    cand = tf.tanh(xh + r * hh)
                else:
                    cand = tf.tanh(xh + tf.matmul(r * h, r_t[:, 2 * hidden:]) + rb[2 * hidden:])
                return ((1 - z) * cand + z * h,)

        # [batch, hidden] static shapes, as the loop requires (torch feeds h0 from ConstantOfShape)
        init = [tf.reshape(s[d], [-1, hidden]) if s is not None else zeros
                for s in ((h0, c0) if lstm else (h0,))]
        y, final = _recur(step, xw, init)
        ys.append(tf.reverse(y, [0]) if reverse else y)
        hs.append(final[0])
        cs.append(final[-1])
    Y, Y_h, Y_c = tf.stack(ys, 1), tf.stack(hs, 0), tf.stack(cs, 0)
    if layout:  # Y [batch, seq, dirs, hidden], states [batch, dirs, hidden]
        Y, Y_h, Y_c = tf.transpose(Y, [2, 0, 1, 3]), *(tf.transpose(s, [1, 0, 2]) for s in (Y_h, Y_c))
    return (Y, Y_h, Y_c) if lstm else (Y, Y_h)


# --- the graph ---------------------------------------------------------------------------------
def translate(model: onnx.ModelProto) -> Callable[..., dict[str, tf.Tensor]]:
    """ONNX model -> fn(**inputs) -> {output name: tf.Tensor}, emitting TF ops node by node."""
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _OPS:
            raise UnsupportedOp(f"{node.domain + '.' if node.domain else ''}{node.op_type}", node.name)
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # graph inputs with an initializer are defaults (IR < 4), overridable by the caller
    input_types = {i.name: _dtype(i.type.tensor_type.elem_type) for i in graph.input}

    # Handlers are plain Python over static facts (ranks, attributes); keep autograph from
    # rewriting them (and from re-reading their source) when fn is traced by tf.function.
    @tf.autograph.experimental.do_not_convert
    def fn(**inputs) -> dict[str, tf.Tensor]:
        env: dict[str, tf.Tensor] = {k: tf.constant(v) for k, v in weights.items()}
        missing = [k for k in input_types if k not in inputs and k not in env]
        if missing:
            raise TypeError(f"missing ONNX graph inputs: {missing}")
        for name, value in inputs.items():
            if name not in input_types:
                raise TypeError(f"unknown ONNX graph input {name!r}")
            t = tf.convert_to_tensor(value)
            env[name] = t if t.dtype == input_types[name] else tf.cast(t, input_types[name])
        for node in graph.node:
            ins = [env[name] if name else None for name in node.input]
            out = _OPS[node.op_type](_Node(node, ins, opset))
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            for name, t in zip(node.output, outs):
                if name:
                    env[name] = t
        return {o.name: env[o.name] for o in graph.output}

    return fn

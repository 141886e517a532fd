"""exporters.onnx_tf: tiny torch modules -> ONNX (opset 17, dynamic batch/sequence) -> TF,
compared with onnxruntime at batch 1 and 4 and sequence 7 and 16."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
import torch
from torch import nn

from exporters.onnx_tf import UnsupportedOp, translate

SHAPES = [(1, 7), (1, 16), (4, 7), (4, 16)]
VOCAB = 50


def export(module: nn.Module, example: dict[str, torch.Tensor], outputs: list[str],
           dynamic: dict[str, dict[int, str]]) -> onnx.ModelProto:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), tuple(example.values()), buf, dynamo=False, opset_version=17,
                      input_names=list(example), output_names=outputs,
                      dynamic_axes={**dynamic, **{o: {0: "batch"} for o in outputs}})
    return onnx.load_from_string(buf.getvalue())


def serving_fn(model: onnx.ModelProto) -> tf.types.experimental.GenericFunction:
    """translate() traced once with every dynamic dim None, as a SavedModel signature would be."""
    specs = []
    for i in model.graph.input:
        tt = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        dtype = tf.as_dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        specs.append(tf.TensorSpec(dims, dtype, name=i.name))
    names, fn = [s.name for s in specs], translate(model)
    return tf.function(lambda *args: fn(**dict(zip(names, args))), input_signature=specs)


def feeds_for(model: onnx.ModelProto, batch: int, seq: int, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for i in model.graph.input:
        tt = i.type.tensor_type
        shape = [batch if j == 0 else (d.dim_value or seq) for j, d in enumerate(tt.shape.dim)]
        if tt.elem_type == onnx.TensorProto.INT64 and "mask" in i.name:  # ones first, then padding
            lengths = np.r_[seq, rng.integers(1, seq + 1, batch - 1)]
            feeds[i.name] = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
        elif tt.elem_type == onnx.TensorProto.INT64:
            feeds[i.name] = rng.integers(0, VOCAB, shape).astype(np.int64)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def assert_matches_ort(model: onnx.ModelProto, shapes=SHAPES, atol=1e-5):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fn, rng = serving_fn(model), np.random.default_rng(0)
    names = [o.name for o in model.graph.output]
    for batch, seq in shapes:
        feeds = feeds_for(model, batch, seq, rng)
        want = dict(zip(names, sess.run(names, feeds)))
        got = fn(*[tf.constant(feeds[i.name]) for i in model.graph.input])
        assert sorted(got) == sorted(want)
        for k in names:
            assert got[k].shape == want[k].shape, (k, batch, seq)
            np.testing.assert_allclose(got[k].numpy(), want[k], atol=atol, rtol=0,
                                       err_msg=f"{k} at batch {batch}, sequence {seq}")


class Attention(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.emb, self.q, self.k, self.v = nn.Embedding(VOCAB, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.norm, self.head, self.d = nn.LayerNorm(d), nn.Linear(d, 3), d

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids)
        scores = self.q(x) @ self.k(x).transpose(1, 2) / self.d**0.5
        scores = scores + (1.0 - attention_mask[:, None, :].float()) * -1e4  # additive padding mask
        x = self.norm(x + torch.softmax(scores, dim=-1) @ self.v(x))
        m = attention_mask[..., None].float()
        return self.head((x * m).sum(1) / m.sum(1))


def attention_model() -> onnx.ModelProto:
    ids = torch.zeros(2, 5, dtype=torch.long)
    seq = {0: "batch", 1: "sequence"}
    return export(Attention(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ["logits"],
                  {"input_ids": seq, "attention_mask": seq})


class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.emb, self.rnn = nn.Embedding(VOCAB, 8), cell
        self.head = nn.Linear(cell.hidden_size * (2 if cell.bidirectional else 1), 3)

    def forward(self, input_ids):
        y, _ = self.rnn(self.emb(input_ids))
        return self.head(y[:, -1])


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.bn.running_mean.uniform_(-1, 1), self.bn.running_var.uniform_(0.5, 2)
        self.head = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


class TwoInTwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.proj = nn.Embedding(VOCAB, 5), nn.Linear(5, 4)

    def forward(self, features, ids):
        h = self.proj(features + self.emb(ids)).mean(1)
        return h, torch.sigmoid(h.sum(-1, keepdim=True))


def test_attention_block_with_padding_mask():
    assert_matches_ort(attention_model())


@pytest.mark.parametrize("cell", [nn.LSTM(8, 6, batch_first=True, bidirectional=True),
                                  nn.GRU(8, 6, batch_first=True, num_layers=2)], ids=["lstm", "gru"])
def test_recurrent_over_embedding(cell):
    ids = torch.zeros(2, 5, dtype=torch.long)
    model = export(Recurrent(cell), {"input_ids": ids}, ["logits"],
                   {"input_ids": {0: "batch", 1: "sequence"}})
    assert {"LSTM", "GRU"} & {n.op_type for n in model.graph.node}
    assert_matches_ort(model)


def test_cnn_nchw():
    model = export(CNN(), {"input": torch.zeros(2, 1, 8, 8)}, ["logits"], {"input": {0: "batch"}})
    assert_matches_ort(model, shapes=[(1, 0), (4, 0)])


def test_two_inputs_two_outputs():
    example = {"features": torch.zeros(2, 5, 5), "ids": torch.zeros(2, 5, dtype=torch.long)}
    seq = {0: "batch", 1: "sequence"}
    model = export(TwoInTwoOut(), example, ["class_logits", "score"], {"features": seq, "ids": seq})
    assert_matches_ort(model)


def test_unsupported_op_is_named():
    class TopTwo(nn.Module):
        def forward(self, x):
            return torch.topk(x, 2, dim=1).values

    model = export(TopTwo(), {"x": torch.zeros(2, 5)}, ["y"], {"x": {0: "batch"}})
    node = next(n for n in model.graph.node if n.op_type == "TopK")
    with pytest.raises(UnsupportedOp, match=f"operator TopK \\(node {node.name}\\)"):
        translate(model)


def test_attention_savedmodel_converts_to_builtin_tflite(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = attention_model()
    module = tf.Module()
    module.serve = serving_fn(model)
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner("serving_default")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch, seq in SHAPES:
        feeds = feeds_for(model, batch, seq, rng)
        np.testing.assert_allclose(runner(**feeds)["logits"], sess.run(["logits"], feeds)[0],
                                   atol=1e-4, rtol=0, err_msg=f"batch {batch}, sequence {seq}")


# --- single-node spec semantics, built with onnx.helper and run eagerly against onnxruntime ----
def _node_model(op, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], n_out=1, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    outs = [f"y{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op, list(inputs) + list(consts), outs, name=f"{op}_0", **attrs)], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.INT64 if op == "Shape" else
                                       helper.np_dtype_to_tensor_dtype(next(iter(inputs.values())).dtype),
                                       None) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


_R = np.random.default_rng(2)
_X = _R.standard_normal((2, 3, 5, 6)).astype(np.float32)
_I = np.array
NODE_CASES = {
    "slice-neg-step-int64-max": ("Slice", {"x": _X}, {"s": _I([-1, 4]), "e": _I([-2**63, 2**63 - 1]),
                                                     "a": _I([-1, 1]), "st": _I([-2, 1])}, {}),
    "reshape-0-and-minus1": ("Reshape", {"x": _X}, {"s": _I([0, -1, 6])}, {}),
    "gather-negative": ("Gather", {"x": _X}, {"i": _I([[-1, 0], [2, -3]])}, {"axis": 2}),
    "div-int-truncates": ("Div", {"a": _I([7, -7, 7, -7])}, {"b": _I([2, 2, -2, -2])}, {}),
    "expand-both-ways": ("Expand", {"x": _R.standard_normal((3, 1)).astype(np.float32)},
                         {"s": _I([2, 1, 4])}, {}),
    "split-sizes": ("Split", {"x": _X}, {"s": _I([1, 2])}, {"axis": 1, "n_out": 2}),
    "shape-start-end": ("Shape", {"x": _X}, {}, {"start": 1, "end": -1}),
    "conv-groups-pads-dilation": ("Conv", {"x": _R.standard_normal((2, 4, 9, 9)).astype(np.float32)},
                                  {"w": _R.standard_normal((6, 2, 3, 3)).astype(np.float32)},
                                  {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]}),
    "conv-depthwise-same-upper": ("Conv", {"x": _R.standard_normal((1, 3, 7, 8)).astype(np.float32)},
                                  {"w": _R.standard_normal((6, 1, 3, 3)).astype(np.float32)},
                                  {"group": 3, "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "conv-1d": ("Conv", {"x": _R.standard_normal((2, 3, 11)).astype(np.float32)},
                {"w": _R.standard_normal((4, 3, 3)).astype(np.float32)}, {"pads": [2, 1]}),
    "cumsum-exclusive-reverse": ("CumSum", {"x": _X}, {"axis": _I(-2)}, {"exclusive": 1, "reverse": 1}),
    "cumsum-int64": ("CumSum", {"x": _I([[1, 1, 0, 0], [1, 0, 1, 1]])}, {"axis": _I(1, dtype=np.int32)}, {}),
    "avgpool-exclude-pad": ("AveragePool", {"x": _X}, {}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "gru-no-lbr-reverse-h0": ("GRU", {"x": _R.standard_normal((5, 2, 3)).astype(np.float32)},
                              {"w": _R.standard_normal((1, 12, 3)).astype(np.float32),
                               "r": _R.standard_normal((1, 12, 4)).astype(np.float32),
                               "b": _R.standard_normal((1, 24)).astype(np.float32),
                               "": np.zeros(0, np.int32),
                               "h0": _R.standard_normal((1, 2, 4)).astype(np.float32)},
                              {"hidden_size": 4, "direction": "reverse", "n_out": 2}),
}


@pytest.mark.parametrize("case", list(NODE_CASES))
def test_node_semantics(case):
    op, inputs, consts, attrs = NODE_CASES[case]
    attrs = dict(attrs)
    n_out = attrs.pop("n_out", 1)
    model = _node_model(op, inputs, {k: v for k, v in consts.items() if k}, n_out, **attrs)
    if "" in consts:  # an omitted optional input (GRU sequence_lens) before a given one
        node = model.graph.node[0]
        names = list(node.input)
        del node.input[:]
        node.input.extend(names[:4] + [""] + names[4:])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, inputs)
    got = translate(model)(**inputs)
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[f"y{i}"].numpy(), w, atol=1e-5, rtol=0)

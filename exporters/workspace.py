"""Intermediate forms shared by several routes, built once per source model and on demand.

PyTorch:  FlatModule -> ONNX (torch.onnx.export) -> onnx2tf -> TF module with the source's signature
Keras:    model -> TF module with the source's signature -> ONNX (tf2onnx)
Both:     TF module -> SavedModel -> TFLite (TFLiteConverter.from_saved_model)
A step that fails raises ConversionError with the root cause; its output goes to the route's log.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from importlib.metadata import version
from pathlib import Path

from exporters.errors import ConversionError, captured, root_cause
from exporters.sources import SourceModel

ONNX_OPSET = 17


def versions(*packages: str) -> dict[str, str]:
    return {p: version(p).split("+")[0] for p in packages}


class step:
    """A cached, timed intermediate. Each artifact's export time includes the steps its route used,
    even when an earlier artifact computed them (reused, not re-run). A failed step stays failed."""

    def __init__(self, fn):
        self.fn, self.name = fn, fn.__name__

    def __get__(self, ws, owner=None):
        if ws is None:
            return self
        return ws.cached(self.name, lambda: self.fn(ws))


class Workspace:
    def __init__(self, source: SourceModel, tmp: Path, log_dir: Path | None = None):
        self.source = source
        self.tmp = Path(tmp)
        self.log_dir = log_dir  # None: converters print to the terminal (--debug)
        self.log: Path | None = None  # the current route's log file
        self.values: dict[str, object] = {}
        self.failures: dict[str, ConversionError] = {}
        self.seconds: dict[str, float] = {}
        self.used: set[str] = set()
        self.chosen_onnx: Path | None = None  # the ONNX artifact that passed parity
        self.chosen_via: str | None = None  # the way to TensorFlow whose SavedModel passed parity

    @property
    def best_onnx(self) -> Path:
        """The ONNX file routes through ONNX start from: the certified artifact, else the first
        exporter's output."""
        return self.chosen_onnx or self.onnx_path

    def route_seconds(self, fn) -> float:
        """Run fn(); return its wall time plus that of the reused steps computed before it."""
        before, self.used = set(self.seconds), set()
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        return wall + sum(self.seconds[s] for s in self.used & before)

    @property
    def is_torch(self) -> bool:
        return self.source.framework == "pytorch"

    @property
    def sig(self):
        return self.source.signature

    def example(self, batch: int = 1) -> list:
        """Torch example inputs in signature order. Tracing exporters freeze data-dependent
        branches (Hugging Face drops an all-ones attention mask at trace time), so the example
        holds a padded row whenever the model has a mask input."""
        import numpy as np
        import torch

        x = self.source.reference_inputs
        rows = list(range(batch))
        mask = next((s.name for s in self.sig.inputs if s.role == "mask"), None)
        if mask is not None and batch >= 2:
            filled = x[mask].reshape(len(x[mask]), -1).sum(1)
            rows = [int(np.argmax(filled)), int(np.argmin(filled))] + rows[2:]
        return [torch.from_numpy(np.ascontiguousarray(x[s.name][rows])) for s in self.sig.inputs]

    @contextlib.contextmanager
    def guard(self, what: str):
        """Converter output to the route's log; any converter exception -> ConversionError naming
        the step and the root cause."""
        try:
            with captured(self.log):
                yield
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001 - converters raise anything
            raise ConversionError(f"{what} failed: {root_cause(e)}") from e

    # --- ONNX ---------------------------------------------------------------------------------

    def _dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {s.name: {i: (s.dims[i] or f"d{i}") for i, d in enumerate(s.shape) if d < 0} for s in self.sig.inputs}
        axes.update({s.name: {0: "batch"} for s in self.sig.outputs})
        return axes

    @step
    def onnx_path(self) -> Path:
        """torch.onnx.export (TorchScript-based exporter) or tf2onnx on the TF module."""
        path = self.tmp / "model.onnx"
        if self.is_torch:
            import torch

            with self.guard("torch.onnx.export"):
                torch.onnx.export(
                    self.source.native, tuple(self.example(2)), str(path), dynamo=False,
                    input_names=self.sig.input_names(), output_names=self.sig.output_names(),
                    dynamic_axes=self._dynamic_axes(), opset_version=ONNX_OPSET,
                )  # fmt: skip
        else:
            import tf2onnx

            with self.guard("tf2onnx.convert.from_function"):
                tf2onnx.convert.from_function(
                    self.tf_module("keras").serve, input_signature=self.tf_input_specs, opset=ONNX_OPSET,
                    output_path=str(path),
                )  # fmt: skip
        return path

    @step
    def onnx_dynamo_path(self) -> Path:
        """torch.export-based ONNX exporter (dynamo=True), the fallback of the TorchScript one."""
        import torch

        path = self.tmp / "model-dynamo.onnx"
        dims: dict[str, object] = {}
        shapes = []
        for s in self.sig.inputs:
            shapes.append({i: dims.setdefault(s.dims[i] or f"d{i}", torch.export.Dim.AUTO)
                           for i, d in enumerate(s.shape) if d < 0})  # fmt: skip
        with self.guard("torch.onnx.export(dynamo=True)"):
            torch.onnx.export(
                self.source.native, tuple(self.example(2)), str(path), dynamo=True,
                input_names=self.sig.input_names(), output_names=self.sig.output_names(),
                dynamic_shapes=(tuple(shapes),), opset_version=18,  # FlatModule.forward(*args)
                external_data=False,  # one self-contained file, like every other artifact
            )  # fmt: skip
        return path

    # Edge runtimes (ExecuTorch) plan memory for each dynamic dimension's upper bound: the batch is
    # bounded here (the server cuts larger batches into runs of at most this many samples), every
    # other dynamic dim by the reference batch's size (the longest the source was given).
    BOUNDED_MAX_BATCH = 64

    def upper_bounds(self) -> dict[str, list[int]]:
        """Input name -> the largest size of each dimension the bounded program takes."""
        x = self.source.reference_inputs
        return {s.name: [self.BOUNDED_MAX_BATCH if i == 0 else (x[s.name].shape[i] if d < 0 else d)
                         for i, d in enumerate(s.shape)] for s in self.sig.inputs}  # fmt: skip

    def dynamic_shapes(self, bounds: dict[str, list[int]] | None = None) -> tuple:
        """torch.export dynamic_shapes for a forward(*args), from the manifest: one Dim per dynamic
        dim name (_dim_name), shared by every input that names it (input_ids and attention_mask
        share "sequence"); unnamed dims ("d<i>") get one Dim per input. With `bounds` (input ->
        upper bound per dim, upper_bounds(): ExecuTorch plans memory for them) a shared Dim's max
        is the largest of its inputs' bounds; without, ranges are left to torch.export (Dim.AUTO
        would hide a specialisation; a named Dim fails loudly and says which range it needs)."""
        from torch.export import Dim

        dynamic = [(s, i, _dim_name(s, i)) for s in self.sig.inputs for i, d in enumerate(s.shape) if d < 0]
        tops: dict[str, int] = {}
        for s, i, name in dynamic if bounds else ():
            tops[name] = max(tops.get(name, 1), bounds[s.name][i])
        dims = {name: Dim(name, min=1, max=tops[name]) if bounds else Dim(name, min=1) for _, _, name in dynamic}
        shapes = [{i: dims[name] for t, i, name in dynamic if t is s} for s in self.sig.inputs]
        return (tuple(shapes),)  # forward(*args): the args tuple is the one positional parameter

    def export_bounded(self, module):
        """torch.export.export of a module taking the signature's inputs, with bounded dims."""
        import torch

        return torch.export.export(var_args(module), tuple(self.example(2)), dynamic_shapes=self.dynamic_shapes(self.upper_bounds()))

    @step
    def bounded_program(self):
        """The source as a torch.export program with bounded dynamic dims (export_bounded)."""
        import torch

        with self.guard("torch.export.export (bounded dynamic dims)"):
            module = self.source.native
            if isinstance(module, torch.jit.ScriptModule):  # torch.export refuses TorchScript
                from torch._export.converter import TS2EPConverter

                module = TS2EPConverter(module, tuple(self.example(2))).convert().module()
            return self.export_bounded(module)
    # --- torch.export ---------------------------------------------------------------------------

    @step
    def exported_program(self):
        """torch.export.export of the PyTorch source (or of the certified ONNX through onnx2torch
        for Keras sources) with every dynamic dim of the manifest. A dim whose valid range is
        narrower than "any size" (a transformer's positions table caps its sequence at 64) is
        narrowed as torch.export suggests; a suggestion to fix a dynamic dim to one size is refused."""
        import torch
        from torch.export.dynamic_shapes import refine_dynamic_shapes_from_suggested_fixes

        if self.is_torch:
            module = self.source.native
            if isinstance(module, torch.jit.ScriptModule):
                # torch.export does not take a ScriptModule, and TS2EPConverter's program (enough for
                # ExecuTorch's bounded dims) answered [3] for [1, 3] at batch 1 once compiled here.
                raise ConversionError("AOTInductor needs the nn.Module, not TorchScript: torch.export does not "
                                      "take a ScriptModule and its TorchScript conversion changed output shapes "
                                      "at batch 1; export from the module's factory (MODULE:FUNCTION) instead")
        else:
            with self.guard("onnx2torch.convert"):
                module = _onnx2torch_module(self.best_onnx, self.sig)
        shapes, args = self.dynamic_shapes(), tuple(self.example(2))
        with self.guard("torch.export.export"):
            try:
                return torch.export.export(module, args, dynamic_shapes=shapes)
            except torch._dynamo.exc.UserError as e:
                if "Suggested fixes" not in e.msg:
                    raise
                refined = refine_dynamic_shapes_from_suggested_fixes(e.msg, shapes)
                fixed = [f"{s.name} dim {i} ({old.__name__}) to {new}" for s, o, n in zip(self.sig.inputs, shapes[0], refined[0])
                         for i, old in o.items() if isinstance(new := n[i], int)]  # fmt: skip
                if fixed:
                    raise ConversionError("torch.export would fix dynamic dims of the manifest to one size: "
                                          + "; ".join(fixed)) from e  # fmt: skip
                return torch.export.export(module, args, dynamic_shapes=refined)

    @property
    def exported_ranges(self) -> dict[str, dict[str, list[int | None]]]:
        """{input: {dim name: [min, max or None]}}: the sizes the exported program accepts per
        dynamic dim, e.g. {"input_ids": {"batch": [1, None], "sequence": [1, 64]}}."""
        import torch

        ep = self.exported_program
        nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
        ranges: dict[str, dict[str, list[int | None]]] = {}
        for spec, name in zip(self.sig.inputs, ep.graph_signature.user_inputs):
            for i, size in enumerate(getattr(nodes[name].meta.get("val"), "shape", ())):
                if spec.shape[i] < 0 and isinstance(size, torch.SymInt):
                    r = ep.range_constraints.get(size.node.expr)
                    upper = None if r is None or r.upper > 2**62 else int(r.upper)  # int_oo: unbounded
                    lower = 1 if r is None else max(1, int(r.lower))
                    ranges.setdefault(spec.name, {})[spec.dims[i] or f"d{i}"] = [lower, upper]
        return ranges

    @step
    def onnx_frozen_path(self) -> Path:
        """tf2onnx on a frozen graph: freezing first turns constants the TF function captures
        (e.g. a Normalization layer's mean and variance) into Consts, where tf2onnx.from_function
        would leave them as extra graph inputs. Tensor names are mapped back to the source's."""
        import onnx
        import tf2onnx
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        path = self.tmp / "model-frozen.onnx"
        with self.guard("freeze -> tf2onnx.convert.from_graph_def"):
            concrete = self.tf_module("keras").serve.get_concrete_function()
            frozen = convert_variables_to_constants_v2(concrete)
            ins, outs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
            proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=ins,
                                                      output_names=outs, opset=ONNX_OPSET)  # fmt: skip
            # tf.nest flattens the dict of outputs in sorted key order
            rename(proto, dict(zip(ins, self.sig.input_names())) | dict(zip(outs, sorted(concrete.structured_outputs))))
            onnx.save(proto, str(path))
        return path

    @step
    def keras_onnx_path(self) -> Path:
        """Keras' own ONNX export (model.export(format="onnx")), tf2onnx's fallback."""
        import onnx

        path = self.tmp / "model-keras.onnx"
        with self.guard("keras model.export(format='onnx')"):
            self.source.native.export(str(path), format="onnx", input_signature=self._keras_signature())
            # Keras names the graph's outputs Identity:0, ... in output order: name them as the source.
            proto = onnx.load(str(path))
            have_in, have_out = [i.name for i in proto.graph.input], [o.name for o in proto.graph.output]
            names = {}
            if len(have_out) == len(self.sig.outputs):
                names |= dict(zip(have_out, self.sig.output_names()))
            if len(have_in) == len(self.sig.inputs) and set(have_in) != set(self.sig.input_names()):
                names |= dict(zip(have_in, self.sig.input_names()))
            rename(proto, names)
            onnx.save(proto, str(path))
        return path

    def _keras_signature(self):
        import keras

        from exporters.sources.keras import takes_dict

        specs = [keras.InputSpec(shape=tuple(None if d < 0 else d for d in s.shape), dtype=s.numpy_dtype.name, name=s.name)
                 for s in self.sig.inputs]  # fmt: skip
        if takes_dict(self.source.native):
            return [{s.name: spec for s, spec in zip(self.sig.inputs, specs)}]
        return specs if len(specs) > 1 else specs

    # --- TensorFlow ---------------------------------------------------------------------------

    @property
    def tf_input_specs(self) -> list:
        return self.tf_specs(None)

    def tf_specs(self, batch: int | None) -> list:
        """tf.TensorSpecs of the source's inputs; `batch` fixes the batch dimension."""
        import tensorflow as tf

        return [tf.TensorSpec([batch, *[None if d < 0 else d for d in s.shape[1:]]], s.numpy_dtype, name=s.name)
                for s in self.sig.inputs]  # fmt: skip

    # A PyTorch model reaches TensorFlow from its certified ONNX file by one of two "vias": onnx2tf
    # (the library), else exporters/onnx_tf.py (our node-by-node translation, for the transformer
    # and recurrent graphs onnx2tf 1.28 cannot build on TensorFlow 2.21). Keras is its own via.
    TORCH_VIAS = ("onnx2tf", "translate")

    @property
    def tf_vias(self) -> tuple[str, ...]:
        """The vias to try, certified one first (set when a SavedModel passes parity)."""
        if not self.is_torch:
            return ("keras",)
        return (self.chosen_via,) if self.chosen_via else self.TORCH_VIAS

    def tf_module(self, via: str):
        """A tf.Module whose `serve` takes the source's inputs as named tensors and returns a dict
        of exactly the source's output names (`serve_one`: the same with the batch fixed at 1)."""
        return self.cached(f"tf_module:{via}", lambda: self._tf_module(via))

    def _tf_module(self, via: str):
        import tensorflow as tf

        in_names, out_names = self.sig.input_names(), self.sig.output_names()
        if via == "onnx2tf":
            inner = self._onnx2tf_loaded
            call = _onnx2tf_call(inner.signatures["serving_default"], in_names, out_names)
        elif via == "translate":
            inner = None
            call = self._translated_call()
        elif hasattr(self.source.native, "signatures"):  # a loaded SavedModel
            inner = self.source.native
            fn = inner.signatures["serving_default"]
            keys = sorted(fn.structured_outputs)
            call = lambda *xs: [fn(**dict(zip(in_names, xs)))[k] for k in keys]  # noqa: E731
        else:
            from exporters.sources import flatten_outputs
            from exporters.sources.keras import takes_dict

            inner, as_dict = self.source.native, takes_dict(self.source.native)

            def call(*xs):
                args = dict(zip(in_names, xs)) if as_dict else (list(xs) if len(xs) > 1 else xs[0])
                return [v for _, v in flatten_outputs(inner(args, training=False))]

        class Serving(tf.Module):
            @tf.function(input_signature=self.tf_input_specs)
            def serve(self, *xs):
                return dict(zip(out_names, call(*xs)))

            @tf.function(input_signature=self.tf_specs(1))
            def serve_one(self, *xs):  # batch fixed at 1 (see saved_model_dir(batch1=True))
                return dict(zip(out_names, call(*xs)))

        module = Serving()
        module.inner = inner
        return module

    def _translated_call(self):
        import onnx

        from exporters import onnx_tf

        with self.guard("exporters/onnx_tf translation"):
            fn = onnx_tf.translate(onnx.load(str(self.best_onnx)))
        in_names, out_names = self.sig.input_names(), self.sig.output_names()
        return lambda *xs: [fn(**dict(zip(in_names, xs)))[o] for o in out_names]

    @step
    def _onnx2tf_loaded(self):
        import onnx2tf
        import tensorflow as tf

        out = self.tmp / "onnx2tf"
        # onnx2tf rewrites its input file in place: give it a copy of the certified artifact.
        onnx_copy = self.tmp / "onnx2tf-input.onnx"
        shutil.copy(self.best_onnx, onnx_copy)
        # keep the source's channels-first layout (onnx2tf only accepts this for 3-5D inputs)
        keep = [s.name for s in self.sig.inputs if 3 <= len(s.shape) <= 5 and s.datatype.startswith("FP")]
        with self.guard("onnx2tf.convert"):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_copy), output_folder_path=str(out),
                keep_ncw_or_nchw_or_ncdhw_input_names=keep or None,
                output_signaturedefs=True, non_verbose=True,
            )  # fmt: skip
            return tf.saved_model.load(str(out))

    def saved_model_dir(self, via: str, batch1: bool = False) -> Path:
        """The SavedModel of `via`; batch1: the serving signature with the batch fixed at 1, for
        TFLite: with a static batch, the TensorList ops of a recurrent layer's loop lower to builtin
        ops (WHILE) while the sequence stays dynamic; the runtime runs a batch sample by sample."""
        path = self.tmp / f"savedmodel-{via}{'-batch1' if batch1 else ''}"

        def save() -> Path:
            module = self.tf_module(via)
            fn, specs = (module.serve_one, self.tf_specs(1)) if batch1 else (module.serve, self.tf_input_specs)
            self._save(path, module, fn, specs)
            return path

        return self.cached(path.name, save)

    def first_saved_model(self, batch1: bool = False) -> Path:
        """The SavedModel TFLite starts from: the certified via's, else the first that builds."""
        error: ConversionError | None = None
        for via in self.tf_vias:
            try:
                return self.saved_model_dir(via, batch1)
            except ConversionError as e:
                error = e
        assert error is not None
        raise error

    def cached(self, key: str, fn):
        """A cached, timed intermediate under `key` (@step uses the method's name). A failed
        intermediate stays failed."""
        if key in self.failures:
            raise self.failures[key]
        if key not in self.values:
            start = time.perf_counter()
            try:
                self.values[key] = fn()
            except ConversionError as e:
                self.failures[key] = e
                raise
            finally:
                self.seconds[key] = time.perf_counter() - start
        self.used.add(key)
        return self.values[key]

    def _save(self, path: Path, module, fn, specs) -> None:
        import tensorflow as tf

        with self.guard("SavedModel export"):
            if self._is_keras_model:
                # Keras' own exporter: a tf.Module wrapping a Keras 3 model saves fine for TF, but
                # TFLite then sees its weights as resource variables and produces NaN.
                import keras

                archive = keras.export.ExportArchive()
                archive.track(self.source.native)
                archive.add_endpoint("serve", fn, input_signature=specs)
                archive.write_out(str(path))
            else:
                tf.saved_model.save(module, str(path), signatures={"serving_default": fn})

    @property
    def _is_keras_model(self) -> bool:
        return not self.is_torch and not hasattr(self.source.native, "signatures")

    @step
    def torchscript_path(self) -> Path:
        import torch

        path = self.tmp / "model.pt"
        with self.guard("torch.jit.trace"):
            native = self.source.native
            if not isinstance(native, torch.jit.ScriptModule):  # a TorchScript source is saved as is
                native = torch.jit.trace(native, tuple(self.example(2)), strict=False)
            native.save(str(path))
        return path


def var_args(module):
    """module behind forward(*args), the calling convention dynamic_shapes() describes."""
    import torch

    class VarArgs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return self.inner(*args)

    return VarArgs()
def _dim_name(spec, i: int) -> str:
    """The torch.export Dim name of a dynamic dim: the manifest's name (shared across inputs),
    or "<input>_d<i>" for dims the manifest leaves unnamed ("d<i>": one per input)."""
    name = spec.dims[i] if spec.dims[i] and not re.fullmatch(r"d\d+", spec.dims[i]) else f"{spec.name}_d{i}"
    return re.sub(r"\W", "_", name)


def _onnx2torch_module(path: Path, sig):
    """onnx2torch's GraphModule takes the ONNX graph's inputs in graph order and returns its
    outputs in graph order: wrap it to take and return the signature's order."""
    import onnx
    import onnx2torch
    import torch

    graph = onnx.load(str(path)).graph
    init = {t.name for t in graph.initializer}
    graph_in, graph_out = [i.name for i in graph.input if i.name not in init], [o.name for o in graph.output]

    class SignatureOrder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = onnx2torch.convert(str(path))

        def forward(self, *args):
            by_name = dict(zip(sig.input_names(), args))
            out = self.inner(*(by_name[n] for n in graph_in))
            got = dict(zip(graph_out, out if isinstance(out, (tuple, list)) else (out,)))
            return tuple(got[n] for n in sig.output_names())

    return SignatureOrder()


def rename(proto, names: dict[str, str]) -> None:
    """Rename ONNX graph inputs/outputs (and every reference to them)."""
    g = proto.graph
    for v in [*g.input, *g.output, *g.value_info]:
        v.name = names.get(v.name, v.name)
    for n in g.node:
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]


def _onnx2tf_call(inner, in_names: list[str], out_names: list[str]):
    """onnx2tf keeps input names (sanitised) and sorts/renames outputs: map both back by name,
    else by position."""
    sig_in = list(inner.structured_input_signature[1])
    sig_out = list(inner.structured_outputs)

    def pick(wanted: list[str], have: list[str], what: str) -> list[str]:
        norm = {h.replace(":", "_").replace("/", "_").replace(".", "_"): h for h in have}
        mapped = [next((h for h in have if h == w), norm.get(w.replace(":", "_").replace("/", "_").replace(".", "_")))
                  for w in wanted]  # fmt: skip
        if all(mapped):
            return mapped
        if len(have) == len(wanted) == 1:
            return have
        # onnx2tf names outputs output_<k> after their position in the ONNX graph
        numbered = {int(m.group(1)): h for h in have if (m := re.fullmatch(r"output_(\d+)", h))}
        if len(numbered) == len(have) == len(wanted) and sorted(numbered) == list(range(len(have))):
            return [numbered[i] for i in range(len(wanted))]
        raise ConversionError(f"onnx2tf: cannot match the {what} {wanted} to the converted model's {have}")

    import tensorflow as tf

    ins, outs = pick(in_names, sig_in, "inputs"), pick(out_names, sig_out, "outputs")
    dtypes = [inner.structured_input_signature[1][k].dtype for k in ins]  # e.g. int64 -> int32
    return lambda *xs: [inner(**{k: tf.cast(x, d) if x.dtype != d else x for k, x, d in zip(ins, xs, dtypes)})[o]
                        for o in outs]  # fmt: skip

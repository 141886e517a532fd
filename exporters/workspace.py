"""Intermediate forms shared by several targets, built once per source model and on demand.

PyTorch:  module -> ONNX (torch.onnx.export) -> onnx2tf -> TF module with the source's signature
Keras:    model -> TF module with the source's signature -> ONNX (tf2onnx.from_function)
Both:     TF module -> SavedModel (tf.saved_model.save) -> TFLite (TFLiteConverter.from_saved_model)
"""

from __future__ import annotations

import contextlib
import io
import time
from importlib.metadata import version
from pathlib import Path

from exporters.sources import SourceModel

ONNX_OPSET = 17


def versions(*packages: str) -> dict[str, str]:
    return {p: version(p).split("+")[0] for p in packages}


class step:
    """A cached, timed intermediate. Each artifact's export time includes the steps its route used,
    even when an earlier artifact computed them (reused, not re-run)."""

    def __init__(self, fn):
        self.fn, self.name = fn, fn.__name__

    def __get__(self, ws, owner=None):
        if ws is None:
            return self
        if self.name not in ws.values:
            start = time.perf_counter()
            ws.values[self.name] = self.fn(ws)
            ws.seconds[self.name] = time.perf_counter() - start
        ws.used.add(self.name)
        return ws.values[self.name]


class ConversionError(Exception):
    """A converter could not handle the model; the message names the step and the cause."""


class Workspace:
    def __init__(self, source: SourceModel, tmp: Path):
        self.source = source
        self.tmp = Path(tmp)
        self.values: dict[str, object] = {}
        self.seconds: dict[str, float] = {}
        self.used: set[str] = set()

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

    def _step(self, what: str):
        """Turns any converter exception into a ConversionError naming the step."""

        @contextlib.contextmanager
        def guard():
            try:
                yield
            except ConversionError:
                raise
            except Exception as e:  # noqa: BLE001 - converters raise anything
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConversionError(f"{what} failed: {type(e).__name__}: {first}") from e

        return guard()

    @step
    def onnx_path(self) -> Path:
        path = self.tmp / "model.onnx"
        if self.is_torch:
            import torch

            sig = self.source.signature
            example = torch.from_numpy(self.source.reference_inputs[:1].copy())
            names = [o.name for o in sig.outputs]
            axes = {t: {0: "batch"} for t in [sig.inputs[0].name, *names]}
            with self._step("torch.onnx.export"), contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(
                    self.source.native, (example,), str(path), dynamo=False,
                    input_names=[sig.inputs[0].name], output_names=names,
                    dynamic_axes=axes, opset_version=ONNX_OPSET,
                )  # fmt: skip
        else:
            import tensorflow as tf
            import tf2onnx

            spec = self.tf_input_spec
            with self._step("tf2onnx.convert.from_function"):
                tf2onnx.convert.from_function(
                    self.tf_module.serve, input_signature=[spec], opset=ONNX_OPSET, output_path=str(path)
                )
            del tf
        return path

    @property
    def tf_input_spec(self):
        import tensorflow as tf

        spec = self.source.input
        shape = [None, *[None if d < 0 else d for d in spec.shape[1:]]]
        return tf.TensorSpec(shape, self.source.reference_inputs.dtype, name=spec.name)

    @step
    def tf_module(self):
        """A tf.Module whose `serve` takes and returns exactly the source's tensor names."""
        import tensorflow as tf

        sig = self.source.signature
        in_name, out_names = sig.inputs[0].name, [o.name for o in sig.outputs]
        if self.is_torch:
            inner = self._onnx2tf_signature()
            inner_out = sorted(inner.structured_outputs)
            call = lambda x: [inner(**{in_name: x})[k] for k in inner_out]  # noqa: E731
        elif hasattr(self.source.native, "signatures"):  # a loaded SavedModel
            inner = self.source.native.signatures["serving_default"]
            orig_in = next(iter(inner.structured_input_signature[1]))
            orig_out = sorted(inner.structured_outputs)
            call = lambda x: [inner(**{orig_in: x})[k] for k in orig_out]  # noqa: E731
        else:
            model = self.source.native
            call = lambda x: (lambda r: list(r) if isinstance(r, (list, tuple)) else [r])(model(x, training=False))  # noqa: E731

        class Serving(tf.Module):
            @tf.function(input_signature=[self.tf_input_spec])
            def serve(self, x):
                return dict(zip(out_names, call(x)))

        module = Serving()
        module.inner = self.source.native if not self.is_torch else self._onnx2tf_loaded
        return module

    def _onnx2tf_signature(self):
        return self._onnx2tf_loaded.signatures["serving_default"]

    @step
    def _onnx2tf_loaded(self):
        import onnx2tf
        import tensorflow as tf

        out = self.tmp / "onnx2tf"
        with self._step("onnx2tf.convert"), contextlib.redirect_stdout(io.StringIO()):
            onnx2tf.convert(
                input_onnx_file_path=str(self.onnx_path), output_folder_path=str(out),
                # keep the source's NCHW input layout (onnx2tf only accepts this for 3-5D inputs)
                keep_ncw_or_nchw_or_ncdhw_input_names=[self.source.input.name] if 3 <= len(self.source.input.shape) <= 5 else None,
                output_signaturedefs=True, non_verbose=True,
            )  # fmt: skip
        return tf.saved_model.load(str(out))

    @step
    def saved_model_dir(self) -> Path:
        import tensorflow as tf

        path = self.tmp / "savedmodel"
        module = self.tf_module
        with self._step("SavedModel export"):
            if self._is_keras_model:
                # Keras' own exporter: a tf.Module wrapping a Keras 3 model saves fine for TF, but
                # TFLite then sees its weights as resource variables and produces NaN.
                import keras

                archive = keras.export.ExportArchive()
                archive.track(self.source.native)
                archive.add_endpoint("serve", module.serve, input_signature=[self.tf_input_spec])
                with contextlib.redirect_stdout(io.StringIO()):
                    archive.write_out(str(path))
            else:
                tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        return path

    @property
    def _is_keras_model(self) -> bool:
        return not self.is_torch and not hasattr(self.source.native, "signatures")

    @step
    def torchscript_path(self) -> Path:
        import torch

        path = self.tmp / "model.pt"
        native = self.source.native
        with self._step("torch.jit.trace"):
            if not isinstance(native, torch.jit.ScriptModule):
                native = torch.jit.trace(native, torch.from_numpy(self.source.reference_inputs[:1].copy()))
            native.save(str(path))
        return path

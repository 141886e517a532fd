"""ExecuTorch .pte (PyTorch's edge runtime, the counterpart of TFLite): torch.export with bounded
dynamic dims -> to_edge_transform_and_lower with the XNNPACK partitioner -> to_executorch. Run by
executorch.runtime (the Python bindings of the C++ runtime) for parity and serving.

ExecuTorch plans every tensor's memory for its upper bound, so the artifact takes at most
Workspace.BOUNDED_MAX_BATCH samples per run and each other dynamic dim up to the reference batch's
size: the manifest records both (fixed_shapes: the batch the server cuts requests into; extra
"max_shapes": every bound, checked by the runtime adapter).

executorch is installed from requirements-edge.lock with --no-deps (make install): its declared
dependencies pull coremltools and more the import and export paths never use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exporters.errors import ConversionError
from exporters.targets import Exported, Route
from exporters.workspace import Workspace, versions

RUNNER_LABEL = "executorch.runtime (XNNPACK delegate)"


def require() -> None:
    """ConversionError naming what is missing and how to install it, when executorch cannot load."""
    from services.executorch.runtime import INSTALL

    try:
        import executorch.exir  # noqa: F401
        import executorch.runtime  # noqa: F401
    except ImportError as e:
        raise ConversionError(f"executorch is not importable ({e}): {INSTALL}") from None


def restore_bounds(program) -> None:
    """Put the program's declared dim ranges back into its shape environment before memory planning.

    Lowering re-runs torch's fake convolution kernel, which picks a CPU conv backend by the batch
    size (`_select_conv_backend`: batch >= 16 or not). With the example's batch as the hint, that
    guard narrows the shared shape environment's batch range to [2, 15], and to_executorch then
    plans every tensor for batch 15 ("Attempted to resize a bounded tensor with a maximum
    capacity of 960 elements" at batch 32). The backend choice is meaningless for a .pte, so the
    range declared at export (program.range_constraints, which lowering leaves intact) wins."""
    from torch._guards import detect_fake_mode
    from torch.utils._sympy.value_ranges import ValueRanges

    vals = [n.meta["val"] for n in program.graph.nodes if n.op == "placeholder" and "val" in n.meta]
    fake = detect_fake_mode(vals)
    if fake is None or fake.shape_env is None:
        return
    env = fake.shape_env
    for sym, declared in program.range_constraints.items():
        have = env.var_to_range.get(sym)
        if have is not None and have.upper < declared.upper:
            env.var_to_range[sym] = ValueRanges(have.lower, declared.upper)


def _lower(ws: Workspace, dest: Path, xnnpack: bool, int8: bool = False, calibration: dict | None = None) -> Exported:
    what = "to_edge_transform_and_lower(XnnpackPartitioner)" if xnnpack else "to_edge (portable kernels)"
    with ws.guard(f"executorch {'int8 ' if int8 else ''}{what} -> to_executorch"):
        require()  # inside the guard: torchao prints at import time (to the route's log)
        program = quantized_int8(ws, calibration) if int8 else ws.bounded_program
        from executorch.exir import to_edge_transform_and_lower

        partitioner = []
        if xnnpack:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            partitioner = [XnnpackPartitioner()]
        edge = to_edge_transform_and_lower(program, partitioner=partitioner)
        restore_bounds(edge.exported_program())
        (dest / "model.pte").write_bytes(edge.to_executorch().buffer)
    bounds = ws.upper_bounds()
    # The batch bound is where the server cuts a request into runs; the other dims stay free there
    # (-1) and are checked against max_shapes by the runtime adapter.
    fixed = {s.name: [bounds[s.name][0], *(-1 if d < 0 else d for d in s.shape[1:])] for s in ws.sig.inputs}
    extra = {"delegate": "XNNPACK" if xnnpack else "none (portable kernels)", "max_shapes": json.dumps(bounds)}
    if int8:
        extra["precision"] = "int8 (XNNPACKQuantizer: symmetric, per-channel weights; calibrated on the reference batch)"
    conv = versions("torch", "executorch") | (versions("torchao") if int8 else {})
    return Exported("model.pte", conv, extra, fixed_shapes=fixed)


def quantized_int8(ws: Workspace, calibration: dict[str, np.ndarray] | None = None):
    """The bounded program quantized by torchao's PT2E flow with the XNNPACK quantizer (int8
    activations, per-channel int8 weights), calibrated on `calibration` (default: the reference
    batch), re-exported with the same bounded dims."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(ws.bounded_program.module(), quantizer)
    x = ws.source.reference_inputs if calibration is None else calibration
    prepared(*[torch.from_numpy(np.ascontiguousarray(x[s.name])) for s in ws.sig.inputs])  # calibration
    return ws.export_bounded(convert_pt2e(prepared))


def _xnnpack(ws: Workspace, dest: Path) -> Exported:
    return _lower(ws, dest, xnnpack=True)


def _xnnpack_int8(ws: Workspace, dest: Path) -> Exported:
    return _lower(ws, dest, xnnpack=True, int8=True)


def export_int8(ws: Workspace, dest: Path, calibration: dict[str, np.ndarray] | None = None) -> Exported:
    """The int8 .pte into dest/model.pte (the executorch:int8 variant, exporters/quantize.py)."""
    return _lower(ws, dest, xnnpack=True, int8=True, calibration=calibration)


def int8_blocked(float_artifact) -> str | None:
    """Why the int8 variant would fail without trying, or None: it lowers to XNNPACK, so when the
    float program fell back to the portable kernels (XNNPACK refused its graph: the transformers'
    reshapes with two dynamic dims) the int8 one fails the same way, after minutes of quantizing."""
    if float_artifact.extra.get("delegate") == "XNNPACK":
        return None
    refused = next((f.error for f in float_artifact.routes_failed if f.route == ROUTES[0].name), "not tried")
    return (f"not attempted: the float program could not use the XNNPACK delegate ({refused}) and this int8 "
            "route lowers to XNNPACK")


def _portable(ws: Workspace, dest: Path) -> Exported:
    return _lower(ws, dest, xnnpack=False)


ROUTES = [
    Route("torch.export (bounded dims) -> to_edge_transform_and_lower(XNNPACK) -> .pte (float32)", ("pytorch",), _xnnpack),
    # Every op on ExecuTorch's portable CPU kernels: slower, but no delegate to refuse an op.
    Route("torch.export (bounded dims) -> to_edge -> .pte (float32, portable kernels)", ("pytorch",), _portable),
]
# The int8 variant: not a fallback of the float artifact (its numbers differ by design), so not in
# ROUTES; certified with a looser tolerance by whoever exports variants (see the README).
INT8_ROUTE = Route("torch.export (bounded dims) -> PT2E XNNPACKQuantizer int8 -> to_edge_transform_and_lower(XNNPACK) -> .pte",
                   ("pytorch",), _xnnpack_int8)  # fmt: skip


def runner(path: Path, signature):
    """The serving adapter's own loader (services/executorch/runtime.py), one XNNPACK thread."""
    import torch

    from services.executorch.runtime import load_method

    method = load_method(path)
    names = signature.input_names()

    def run(x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = method.execute([torch.from_numpy(np.ascontiguousarray(x[n])) for n in names])
        return {s.name: g.numpy() for s, g in zip(signature.outputs, got)}

    return run

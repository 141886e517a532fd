"""The steps of the OIP front ends, REST (api_v2.py) and gRPC (grpc_api.py): one data path.

Each front end only parses its wire form into the codec's types and encodes the result; naming,
routing, validation, dispatch with failover, output selection, readiness and the index are here
(and in core.Gateway), so both answer the same request the same way.
"""

from __future__ import annotations

from typing import Any

from contract.codec import InferRequest, InferResponse
from contract.datatypes import OIP_TO_TF
from contract.manifest import Signature, TensorSpec
from services.gateway.backends.base import Answer, Call
from services.gateway.context import RequestContext
from services.gateway.core import Gateway
from services.gateway.routing import Target

SERVER_METADATA: dict[str, Any] = {
    "name": "servebench-gateway", "version": "0.1.0",
    "extensions": ["binary_tensor_data", "model_repository"],
}  # fmt: skip


def _metadata(t: Target, name: str, targets: list[Target]) -> dict[str, Any]:
    m = t.model
    spec = lambda s: {"name": s.name, "datatype": s.datatype, "shape": s.shape}  # noqa: E731
    return {
        "name": name,
        "versions": [t.version],
        "platform": t.runtime,
        "inputs": [spec(s) for s in m.signature.inputs],
        "outputs": [spec(s) for s in m.signature.outputs],
        "parameters": {
            "runtime": t.runtime,
            "target": t.name,
            "candidates": [c.name for c in targets],
            # by manifest key: "tflite" and its variants "tflite:int8-static", ... apart
            "parity": {key: a.parity.model_dump() for key, a in m.artifacts.items()},
            "parity_ok": t.artifact.parity.ok,
            "source": m.source.model_dump(exclude_none=True),
        },
    }


def describe_target(gw: Gateway, ctx: RequestContext, name: str, version: str | None,
                    targets: list[Target] | None = None) -> Target:  # fmt: skip
    """The target a request on `name` would go to first (whose manifest metadata describes)."""
    t = (targets or gw.router.resolve(name, version))[0]
    ctx.model, ctx.runtime, ctx.served_by = t.model.name, t.runtime, t.runtime
    return t


def describe(gw: Gateway, ctx: RequestContext, name: str,
             version: str | None) -> tuple[dict[str, Any], Target]:  # fmt: skip
    """Model metadata from the manifest, for the target a request would go to first."""
    targets = gw.router.resolve(name, version)
    t = describe_target(gw, ctx, name, version, targets)
    return _metadata(t, name, targets), t


# --- TF Serving (REST api_v1.py, gRPC tfs_grpc.py) ---


def _tf_tensor(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": OIP_TO_TF[spec.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape],
                         "unknown_rank": False},
        "name": spec.name,
    }


def signature_def_map(sig: Signature) -> dict[str, Any]:
    """TF Serving's SignatureDefMap (its JSON form) of a manifest's signature: serving_default."""
    return {"signature_def": {"serving_default": {
        "inputs": {s.name: _tf_tensor(s) for s in sig.inputs},
        "outputs": {s.name: _tf_tensor(s) for s in sig.outputs},
        "method_name": "tensorflow/serving/predict",
    }}}


async def tf_model_status(gw: Gateway, ctx: RequestContext, name: str,
                          version: str | None) -> dict[str, Any]:  # fmt: skip
    """TF Serving's GetModelStatusResponse (its JSON form): AVAILABLE when a target of the name is
    ready, else UNKNOWN with the reason."""
    targets = gw.router.resolve(name, version)
    ctx.model = targets[0].model.name
    t, reason = await gw.first_ready(targets)
    if t is not None:
        ctx.runtime = ctx.served_by = t.runtime
    state, code = ("AVAILABLE", "OK") if t else ("UNKNOWN", "UNAVAILABLE")
    return {"model_version_status": [{
        "version": (t or targets[0]).version,
        "state": state,
        "status": {"error_code": code, "error_message": reason},
    }]}


async def readiness(gw: Gateway, ctx: RequestContext, name: str,
                    version: str | None) -> tuple[bool, str]:  # fmt: skip
    """(ready, why not): ready when one of the name's targets reports the model ready."""
    targets = gw.router.resolve(name, version)
    ctx.model = targets[0].model.name
    t, reason = await gw.first_ready(targets)
    if t is None:
        return False, reason
    ctx.runtime = ctx.served_by = t.runtime
    return True, ""


def infer_targets(gw: Gateway, ctx: RequestContext, name: str,
                  version: str | None) -> list[Target]:  # fmt: skip
    """Where an inference on `name` may go, in order (404 before anything is read or parsed)."""
    targets = gw.router.resolve(name, version)
    ctx.model = targets[0].model.name
    return targets


async def infer(gw: Gateway, ctx: RequestContext, targets: list[Target],
                req: InferRequest) -> tuple[Target, Answer]:  # fmt: skip
    """Validate against the manifest (header-level checks only: names, datatypes, shapes,
    counts, sizes, batch limit; values are decoded only when a backend needs another wire form)
    and dispatch with failover."""
    manifest = targets[0].model
    batch = req.validate(manifest.signature, gw.limits(manifest))
    return await gw.infer(targets, Call(manifest, req, batch, ctx.request_id), ctx)


def shaped(answer: Answer, req: InferRequest, target: Target) -> InferResponse:
    """The answer as the client asked for it: its requested outputs, its id, the version of the
    artifact that answered."""
    resp = answer.decoded().select(req.output_names(target.model.signature))
    resp.id, resp.model_version = req.id, target.version
    return resp


async def repository_index(gw: Gateway, ready_only: bool) -> list[dict[str, Any]]:
    entries = await gw.index()
    return [e for e in entries if e["state"] == "READY"] if ready_only else entries

"""Request bodies from the held-out reference samples, and the check every response must pass.

Bodies are encoded once at start-up (batch 1, one per sample, used round robin). The expected class
of a sample is the source model's own prediction (argmax of the reference outputs), not the label,
so a runtime that reproduces the source model never fails; a near-tie within the artifact's parity
tolerance is accepted as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from model_store.manifest import FORMAT_OF_RUNTIME, Manifest, load_store
from services.settings import StackSettings

VIAS = ("gateway", "direct", "ceiling")
DEFAULT_TOLERANCE = 1e-4
_BODIES: dict[tuple, list[bytes]] = {}


@dataclass(frozen=True)
class Target:
    via: str  # gateway | direct | ceiling
    model: str
    runtime: str

    @property
    def name(self) -> str:
        return f"{self.via} {self.model}@{self.runtime}"

    @property
    def protocol(self) -> str:
        """Wire format: OIP v2 JSON everywhere except TF Serving's own REST API."""
        return "tfserving" if (self.via, self.runtime) == ("direct", "tfserving") else "oip"

    @property
    def path(self) -> str:
        if self.via == "gateway":
            return f"/v2/models/{self.model}@{self.runtime}/infer"
        if self.via == "direct" and self.runtime == "tfserving":
            return f"/v1/models/{self.model}:predict"
        if self.via == "direct" and self.runtime == "torchserve":
            return f"/predictions/{self.model}"
        return f"/v2/models/{self.model}/infer"


def base_url(target: Target, settings: StackSettings) -> str:
    """Where a target lives by default (gateway, or the runtime's own port for direct runs)."""
    if target.via != "direct":
        return f"http://{settings.gateway_host}:{settings.gateway_port}"
    return settings.runtime_url(target.runtime)


def auth_headers(settings: StackSettings) -> dict[str, str]:
    key = settings.gateway_api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Expectation:
    output: str  # output tensor name
    datatype: str  # OIP datatype
    shape: tuple[int, ...]  # batch 1
    reference: np.ndarray  # the source model's output for this sample, flat
    expected: int  # argmax of reference
    tolerance: float  # parity tolerance of the artifact


@dataclass(frozen=True)
class Payload:
    target: Target
    bodies: list[bytes]
    expectations: list[Expectation]


def encode_body(target: Target, name: str, datatype: str, sample: np.ndarray) -> bytes:
    x = np.ascontiguousarray(sample[None])
    if target.protocol == "tfserving":
        return orjson.dumps({"inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY)
    tensor = {"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel()}
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


def build_payload(target: Target, manifest: Manifest, store: Path, samples: int = 0) -> Payload:
    """Pre-encoded bodies and expectations for the first `samples` reference samples (0 = all)."""
    inputs, outputs, _labels = manifest.load_reference(store)
    spec_in, spec_out = manifest.signature.inputs[0], manifest.signature.outputs[0]
    n = len(inputs) if samples <= 0 else min(samples, len(inputs))
    art = manifest.artifacts.get(FORMAT_OF_RUNTIME.get(target.runtime, ""))
    tol = art.parity.tolerance if art else DEFAULT_TOLERANCE
    x = inputs.astype(spec_in.numpy_dtype, copy=False)
    # Every OIP target of a model sends the same bytes: encode once (MobileNet: 1.6 MB a body).
    key = (str(store), manifest.name, target.protocol, n)
    if key not in _BODIES:
        _BODIES[key] = [encode_body(target, spec_in.name, spec_in.datatype, x[i]) for i in range(n)]
    expectations = []
    for i in range(n):
        ref = np.asarray(outputs[i], dtype=np.float64).ravel()
        expectations.append(
            Expectation(
                output=spec_out.name,
                datatype=spec_out.datatype,
                shape=(1, *outputs.shape[1:]),
                reference=ref,
                expected=int(np.argmax(ref)),
                tolerance=float(tol),
            )
        )
    return Payload(target, _BODIES[key], expectations)


def resolve_targets(
    store: Path, models: list[str], runtimes: list[str], via: str
) -> tuple[list[Target], dict[str, Manifest], list[str]]:
    """(targets, manifests, notes): every requested (model, runtime) whose artifact exists and
    passed parity; empty lists mean all. Notes say what was skipped and why."""
    manifests = load_store(store)
    notes = []
    targets = []
    for model in models or sorted(manifests):
        m = manifests.get(model)
        if m is None:
            notes.append(f"{model}: not in the model store {store}")
            continue
        for runtime in runtimes or sorted(FORMAT_OF_RUNTIME):
            fmt = FORMAT_OF_RUNTIME.get(runtime)
            if via == "ceiling":  # the trivial endpoint serves no artifact
                targets.append(Target(via, model, runtime))
            elif fmt is None:
                notes.append(f"{model}@{runtime}: unknown runtime")
            elif not m.passed(fmt):
                notes.append(f"{model}@{runtime}: no {fmt} artifact that passed parity")
            else:
                targets.append(Target(via, model, runtime))
    return targets, manifests, notes


def _oip_output(doc: dict, exp: Expectation) -> tuple[np.ndarray | None, str | None]:
    tensors = doc.get("outputs")
    if not isinstance(tensors, list) or not tensors:
        return None, "no outputs"
    t = next((t for t in tensors if isinstance(t, dict) and t.get("name") == exp.output), None)
    if t is None:
        return None, f"no output {exp.output!r}"
    if t.get("datatype") != exp.datatype:
        return None, f"datatype {t.get('datatype')} != {exp.datatype}"
    if tuple(t.get("shape") or ()) != exp.shape:
        return None, f"shape {t.get('shape')} != {list(exp.shape)}"
    return np.asarray(t.get("data"), dtype=np.float64).ravel(), None


def check_response(
    payload: Payload, index: int, status: int, content: bytes | None, served_by: str | None = None
) -> str | None:
    """None if the response to sample `index` is right, else a short reason (Locust groups
    failures by message, so reasons carry no per-request numbers)."""
    if not status:
        return "connection error"
    if status != 200:
        return f"HTTP {status}"
    target, exp = payload.target, payload.expectations[index]
    if target.via == "gateway" and served_by and not served_by.startswith(target.runtime):
        return f"served by {served_by}, not {target.runtime}"
    try:
        doc = orjson.loads(content or b"")
    except orjson.JSONDecodeError:
        return "response is not JSON"
    if not isinstance(doc, dict):
        return "response is not a JSON object"
    if target.protocol == "tfserving":
        # TF Serving's columnar answer has no datatype: the values must be numbers of this shape.
        try:
            arr = np.asarray(doc.get("outputs"), dtype=np.float64)
        except (TypeError, ValueError):
            return "outputs are not numbers"
        if arr.shape != exp.shape:
            return f"shape {list(arr.shape)} != {list(exp.shape)}"
        data = arr.ravel()
    else:
        try:
            data, problem = _oip_output(doc, exp)
        except (TypeError, ValueError):
            return "output data are not numbers"
        if problem:
            return problem
    if data.size != exp.reference.size:
        return f"{data.size} values, expected {exp.reference.size}"
    pred = int(np.argmax(data))
    # A near-tie in the source model's own scores may flip within the parity tolerance.
    ref = exp.reference
    if pred != exp.expected and ref[pred] < ref[exp.expected] - 2 * exp.tolerance:
        return "wrong class"
    return None

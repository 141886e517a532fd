"""Request bodies from the held-out reference samples, and the check every response must pass.

Bodies are encoded once at start-up with contract/codec.py (batch 1, one per sample, every input of
the model, used round robin). Models with a dynamic non-batch dimension (a sequence) get requests of
varying length: with a mask input, each sample is cropped to its mask length (the padding is
dropped; the source model's answer does not change); without one, samples cycle through several
lengths (full, 1/2, 1/4), and only full-length samples have their class checked.

Every output is checked (name, datatype, shape); the predicted class of the first classification
output ([batch, classes]) must equal the source model's own prediction (argmax of the reference
outputs), not the label, so a runtime that reproduces the source model never fails; a near-tie
within the artifact's parity tolerance is accepted as well (for a quantized variant, within twice
its certificate's max abs error).

Encoding (the bench's --encoding): "auto" sends a model's tensors the way production clients of
the OIP do for that size, the binary tensor extension when the JSON body would be larger than
BINARY_ABOVE (tritonclient's default; JSON for a 1.6 MB MobileNet image costs the server more than
the inference), JSON below it; "json" and "binary" force one for every OIP target. Direct runs to
TF Serving (its REST JSON) and TorchServe (no binary extension) keep their own wire formats.

A quantized variant is a target of its own: runtime "tflite:int8-static" is
`<model>@tflite:int8-static` through the gateway and `<model>:int8-static` on the TFLite server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.codec import BINARY_HEADER, CodecError, InferRequest, InferResponse, decode_tfserving_outputs, element_count
from contract.manifest import VARIANT_SEP, Manifest, Signature, TensorSpec, load_store, served_name, variant_key
from contract.runtimes import FORMAT_OF_RUNTIME
from services.settings import StackSettings

VIAS = ("gateway", "direct", "ceiling")
ENCODINGS = ("auto", "json", "binary")
BINARY_ABOVE = 64 * 1024  # auto: an OIP JSON body larger than this goes as binary tensors
DEFAULT_TOLERANCE = 1e-4
_BODIES: dict[tuple, list[bytes]] = {}


@dataclass(frozen=True)
class Target:
    via: str  # gateway | direct | ceiling
    model: str
    runtime: str  # or "<runtime>:<variant>" for a quantized variant

    @property
    def server(self) -> str:
        """The runtime service that answers (a variant's runtime without the variant)."""
        return self.runtime.partition(VARIANT_SEP)[0]

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
        return f"/v2/models/{served_name(self.model, self.runtime.partition(VARIANT_SEP)[2] or None)}/infer"


def artifact_key(runtime: str) -> str | None:
    """The manifest key of what a runtime (or "<runtime>:<variant>") serves; None if unknown."""
    rt, _, variant = runtime.partition(VARIANT_SEP)
    fmt = FORMAT_OF_RUNTIME.get(rt)
    return variant_key(fmt, variant or None) if fmt else None


def base_url(target: Target, settings: StackSettings) -> str:
    """Where a target lives by default (gateway, or the runtime's own port for direct runs)."""
    if target.via != "direct":
        return f"http://{settings.gateway_host}:{settings.gateway_port}"
    return settings.runtime_url(target.server)


def auth_headers(settings: StackSettings) -> dict[str, str]:
    key = settings.gateway_api_key
    return {"Authorization": f"Bearer {key}"} if key else {}


LENGTH_FRACTIONS = (1.0, 0.5, 0.25)  # dynamic dims without a mask: lengths cycled over samples


@dataclass(frozen=True)
class OutputCheck:
    name: str
    datatype: str  # OIP datatype
    shape: tuple[int, ...]  # batch 1


@dataclass(frozen=True)
class Expectation:
    outputs: tuple[OutputCheck, ...]  # every output, in signature order
    classify: str | None  # the first classification output ([batch, classes]), if any
    reference: np.ndarray | None  # the source model's scores on it for this sample, flat
    expected: int | None  # argmax of reference (None: not checked, e.g. a cropped sample)
    tolerance: float  # parity tolerance of the artifact


@dataclass(frozen=True)
class Payload:
    target: Target
    bodies: list[bytes]
    expectations: list[Expectation]
    signature: Signature
    header_lens: tuple[int | None, ...] = ()  # Inference-Header-Content-Length per binary body
    encoding: str = "json"  # what the bodies are: json | binary | tfserving-json

    def headers(self, index: int) -> dict[str, str]:
        """The extra request headers of body `index` (the binary extension's header length)."""
        n = self.header_lens[index] if index < len(self.header_lens) else None
        return {} if n is None else {BINARY_HEADER: str(n)}


@dataclass(frozen=True)
class Sample:
    inputs: dict[str, np.ndarray]  # batch 1, every input
    outputs: dict[str, np.ndarray]  # the source outputs (cropped like the inputs), batch 1
    known: bool  # outputs are the source model's answer to these inputs (else only shapes)


def classification_output(signature: Signature) -> TensorSpec | None:
    """The first output shaped [batch, classes] with more than one class."""
    return next((s for s in signature.outputs if len(s.shape) == 2 and s.shape[1] > 1), None)


def _crop(arr: np.ndarray, spec: TensorSpec, lengths: dict[str, int]) -> np.ndarray:
    index = [slice(None)] * arr.ndim
    for k in range(1, min(arr.ndim, len(spec.shape))):
        if spec.shape[k] < 0 and spec.dims[k] in lengths:
            index[k] = slice(0, lengths[spec.dims[k]])
    return np.ascontiguousarray(arr[tuple(index)])


def _mask_lengths(mask: np.ndarray, spec: TensorSpec) -> dict[str, int]:
    """Per dynamic dim of a mask sample (no batch axis): last position holding a 1, plus one."""
    out = {}
    for k in range(mask.ndim):
        if spec.shape[k + 1] < 0:
            other = tuple(j for j in range(mask.ndim) if j != k)
            nz = np.nonzero(mask.any(axis=other) if other else mask)[0]
            out[spec.dims[k + 1]] = int(nz[-1]) + 1 if nz.size else 1
    return out


def reference_samples(manifest: Manifest, store: Path, n: int = 0) -> list[Sample]:
    """The first `n` reference samples (0 = all), batch 1, every input and output, with dynamic
    dims cropped to the mask length (or cycled through LENGTH_FRACTIONS without a mask)."""
    inputs, outputs, _labels = manifest.load_reference(store)
    sig = manifest.signature
    total = len(next(iter(inputs.values())))
    n = total if n <= 0 else min(n, total)
    full: dict[str, int] = {}  # dynamic dim name -> its size in the reference batch
    for s in sig.inputs:
        for k in range(1, len(s.shape)):
            if s.shape[k] < 0:
                full.setdefault(s.dims[k], inputs[s.name].shape[k])
    mask = next((s for s in sig.inputs if s.role == "mask" and any(d < 0 for d in s.shape[1:])), None)
    out = []
    for i in range(n):
        lengths: dict[str, int] = {}
        known = True
        if mask is not None:
            lengths = _mask_lengths(np.asarray(inputs[mask.name][i]), mask)
        elif full and (frac := LENGTH_FRACTIONS[i % len(LENGTH_FRACTIONS)]) < 1:
            lengths = {d: max(1, int(size * frac)) for d, size in full.items()}
            known = False
        x = {s.name: _crop(inputs[s.name][i : i + 1], s, lengths).astype(s.numpy_dtype, copy=False)
             for s in sig.inputs}  # fmt: skip
        y = {s.name: _crop(outputs[s.name][i : i + 1], s, lengths) for s in sig.outputs}
        out.append(Sample(x, y, known))
    return out


def encode_body(target: Target, inputs: dict[str, np.ndarray]) -> bytes:
    """The request body for a target: OIP JSON, or TF Serving's columnar body (codec)."""
    req = InferRequest.from_arrays(inputs)
    return req.to_tfserving() if target.protocol == "tfserving" else req.to_oip()[0]


def wire_encoding(requested: str, target: Target, json_bytes: int) -> str:
    """What a target's bodies are sent as for the requested encoding (auto | json | binary):
    json | binary for OIP, the runtime's own format for direct TF Serving / TorchServe runs."""
    if requested not in ENCODINGS:
        raise ValueError(f"unknown encoding {requested!r}: one of {', '.join(ENCODINGS)}")
    if target.protocol == "tfserving":
        return "tfserving-json"
    if target.via == "direct" and target.server == "torchserve":
        return "json"  # TorchServe has no binary tensor extension
    if requested == "auto":
        return "binary" if json_bytes > BINARY_ABOVE else "json"
    return requested


def encode_bodies(target: Target, samples: list[Sample], encoding: str
                  ) -> tuple[str, list[bytes], tuple[int | None, ...]]:  # fmt: skip
    """(wire encoding, bodies, header lengths) of the samples for the requested encoding."""
    bodies = [encode_body(target, s.inputs) for s in samples]
    wire = wire_encoding(encoding, target, max(map(len, bodies), default=0))
    if wire != "binary":
        return wire, bodies, (None,) * len(bodies)
    binary = [InferRequest.from_arrays(s.inputs).to_oip(binary=True) for s in samples]
    return wire, [b for b, _ in binary], tuple(n for _, n in binary)


def build_payload(target: Target, manifest: Manifest, store: Path, samples: int = 0,
                  encoding: str = "auto") -> Payload:
    """Pre-encoded bodies and expectations for the first `samples` reference samples (0 = all),
    in the requested encoding (auto | json | binary, see the module's docstring)."""
    n = samples
    sig = manifest.signature
    art = manifest.artifacts.get(artifact_key(target.runtime) or "")
    tol = DEFAULT_TOLERANCE
    if art is not None:  # a quantized variant has no tolerance: its measured max abs error
        tol = float(art.parity.tolerance if art.parity.tolerance is not None else art.parity.max_abs_error or tol)
    cls = classification_output(sig)
    picked = reference_samples(manifest, store, n)
    # Every OIP target of a model sends the same bytes: encode once (MobileNet: 1.6 MB a body).
    key = (str(store), manifest.name, target.protocol, target.via == "direct" and
           target.server == "torchserve", n, encoding)  # fmt: skip
    if key not in _BODIES:
        _BODIES[key] = encode_bodies(target, picked, encoding)
    wire, bodies, header_lens = _BODIES[key]
    expectations = []
    for s in picked:
        checks = tuple(OutputCheck(o.name, o.datatype, tuple(s.outputs[o.name].shape))
                       for o in sig.outputs)  # fmt: skip
        ref = np.asarray(s.outputs[cls.name], dtype=np.float64).ravel() if cls else None
        expected = int(np.argmax(ref)) if ref is not None and s.known else None
        expectations.append(Expectation(checks, cls.name if cls else None, ref, expected, tol))
    return Payload(target, bodies, expectations, sig, header_lens, wire)


def certified_runtimes(m: Manifest) -> list[str]:
    """Every '<runtime>[:<variant>]' with a certified artifact of this model: what a user may
    name instead of one it does not have (`tflite:fp16`, not `tflite:float16`)."""
    out = []
    for runtime, fmt in sorted(FORMAT_OF_RUNTIME.items()):
        out += [runtime] if m.passed(fmt) else []
        out += [f"{runtime}{VARIANT_SEP}{v}" for v in m.certified_variants(fmt)]
    return out


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
            fmt = artifact_key(runtime)
            if via == "ceiling":  # the trivial endpoint serves no artifact
                targets.append(Target(via, model, runtime))
            elif fmt is None:
                notes.append(f"{model}@{runtime}: unknown runtime")
            elif not m.passed(fmt):
                has = ", ".join(certified_runtimes(m)) or "none"
                notes.append(f"{model}@{runtime}: no {fmt} artifact that passed parity "
                             f"(certified for this model: {has})")
            else:
                targets.append(Target(via, model, runtime))
    return targets, manifests, notes


def _oip_arrays(content: bytes, header_len: int | None, exp: Expectation
                ) -> tuple[dict[str, np.ndarray] | None, str | None]:  # fmt: skip
    try:
        resp = InferResponse.from_oip(content, header_len)
    except CodecError as e:
        if "not valid JSON" in e.message:
            return None, "response is not JSON"
        if "not a JSON object" in e.message:
            return None, "response is not a JSON object"
        if "'outputs'" in e.message:
            return None, "no outputs"
        return None, "malformed response"
    by_name = {t.name: t for t in resp.outputs}
    several = len(exp.outputs) > 1
    for oc in exp.outputs:
        who = f"{oc.name}: " if several else ""
        t = by_name.get(oc.name)
        if t is None:
            return None, f"no output {oc.name!r}"
        if t.datatype != oc.datatype:
            return None, f"{who}datatype {t.datatype} != {oc.datatype}"
        if tuple(t.shape) != oc.shape:
            return None, f"{who}shape {t.shape} != {list(oc.shape)}"
        try:
            if t.count() != element_count(t.shape):
                return None, f"{who}{t.count()} values, expected {element_count(t.shape)}"
        except CodecError:
            return None, f"{who}output data are not numbers"
    if exp.classify is None:
        return {}, None
    try:
        return {exp.classify: by_name[exp.classify].decode()}, None
    except CodecError:
        return None, "output data are not numbers"


def _tfserving_arrays(content: bytes, payload: Payload, exp: Expectation
                      ) -> tuple[dict[str, np.ndarray] | None, str | None]:  # fmt: skip
    # TF Serving's columnar answer has no datatype: cast to the signature's, check the shapes.
    try:
        arrays = decode_tfserving_outputs(content, payload.signature, 1)
    except CodecError as e:
        if "not valid JSON" in e.message:
            return None, "response is not JSON"
        return None, e.message
    except (TypeError, ValueError):
        return None, "outputs are not numbers"
    several = len(exp.outputs) > 1
    for oc in exp.outputs:
        a = arrays[oc.name]
        if tuple(a.shape) != oc.shape:
            return None, f"{oc.name + ': ' if several else ''}shape {list(a.shape)} != {list(oc.shape)}"
    return arrays, None


def header_len(headers) -> int | None:
    """Inference-Header-Content-Length of a response (binary outputs), or None."""
    value = headers.get("inference-header-content-length") if headers else None
    return int(value) if value and value.isdigit() else None


def check_response(payload: Payload, index: int, status: int, content: bytes | None,
                   served_by: str | None = None, header_len: int | None = None) -> str | None:  # fmt: skip
    """None if the response to sample `index` is right, else a short reason (Locust groups
    failures by message, so reasons carry no per-request numbers)."""
    if not status:
        return "connection error"
    if status != 200:
        return f"HTTP {status}"
    target, exp = payload.target, payload.expectations[index]
    if target.via == "gateway" and served_by and not served_by.startswith(target.server):
        return f"served by {served_by}, not {target.runtime}"
    if target.protocol == "tfserving":
        arrays, problem = _tfserving_arrays(content or b"", payload, exp)
    else:
        arrays, problem = _oip_arrays(content or b"", header_len, exp)
    if problem:
        return problem
    if exp.classify is None or exp.reference is None:
        return None
    data = np.asarray(arrays[exp.classify], dtype=np.float64).ravel()
    if data.size != exp.reference.size:
        return f"{data.size} values, expected {exp.reference.size}"
    if exp.expected is None:
        return None  # a cropped sample without a mask: the source's answer is not known
    pred = int(np.argmax(data))
    # A near-tie in the source model's own scores may flip within the parity tolerance.
    ref = exp.reference
    if pred != exp.expected and ref[pred] < ref[exp.expected] - 2 * exp.tolerance:
        return "wrong class"
    return None

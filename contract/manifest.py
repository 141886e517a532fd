"""The contract between exporters and everything downstream: model_store/<model>/manifest.json.

Layout of a store (built by `make export`, never committed):

    model_store/
      <model>/manifest.json
      <model>/reference/inputs.npz    held-out batch: one array per input, keyed by input name
      <model>/reference/outputs.npz   the source framework's outputs on it, keyed by output name
      <model>/reference/labels.npy    (when the model has labels)
      <model>/onnx/<version>/model.onnx
      <model>/savedmodel/<version>/saved_model.pb ...   (TF Serving layout: base_path = <model>/savedmodel)
      <model>/tflite/<version>/model.tflite
      <model>/torchserve/<version>/<model>.mar
      <model>/<format>-<variant>/<version>/...          quantized variants (exporters/quantize.py):
                                                        key "<format>:<variant>" in "artifacts"
      torchserve/<model>.mar                            TorchServe's --model-store (copies)
      tfserving/models.config                           TF Serving's --model_config_file

Every artifact of one model takes the same inputs (names, shape, layout, datatype) and returns the
same outputs in the same order as the source model. Datatypes use Open Inference Protocol names;
a dimension of -1 is dynamic and `dims` names it (batch, sequence, height, ...).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from contract.datatypes import numpy_dtype

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2
log = logging.getLogger(__name__)

Weights = Literal["trained", "random-init", "unknown"]


class ManifestError(ValueError):
    """A manifest that cannot be read; the message names the file and what to do."""


class TensorSpec(BaseModel):
    name: str
    datatype: str  # OIP name: FP32, INT64, ...
    shape: list[int]  # -1 = dynamic; shape[0] is the batch dimension
    dims: list[str] = Field(default_factory=list)  # a name per dimension ("" = fixed size)
    layout: str | None = None  # e.g. NCHW / NHWC for images
    # What the values mean, where it matters to draw valid inputs: "token_ids" (integers in
    # value_range), "mask" (0/1, 1 = real token), "segment_ids", or None for plain tensors.
    role: str | None = None
    value_range: tuple[float, float] | None = None  # [low, high) of valid values

    @model_validator(mode="after")
    def _dims(self) -> "TensorSpec":
        if not self.dims:
            self.dims = [("batch" if i == 0 else f"d{i}") if d < 0 else "" for i, d in enumerate(self.shape)]
        if len(self.dims) != len(self.shape):
            raise ValueError(f"tensor {self.name!r}: {len(self.dims)} dim names for shape {self.shape}")
        return self

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.datatype)

    @property
    def dynamic(self) -> bool:
        """A dimension other than the batch is dynamic."""
        return any(d < 0 for d in self.shape[1:])


class Signature(BaseModel):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]


class Source(BaseModel):
    framework: Literal["pytorch", "keras", "tensorflow"]
    framework_version: str
    architecture: str
    weights: Weights = "unknown"  # as the user says; never guessed
    library: str | None = None  # e.g. "transformers 5.24.0 BertForSequenceClassification"
    dataset: str | None = None
    test_accuracy: float | None = None
    # median in-process latency of one sample: torch eager (no_grad), Keras inside a tf.function
    single_sample_ms: float | None = None
    note: str | None = None


class OutputParity(BaseModel):
    max_abs_error: float
    scale: float = 1.0  # max(1, largest |value| of the source's output): tolerance x scale passes
    top1_agreement: float | None = None  # where the output is a classification [batch, classes]


class QuantizedCheck(BaseModel):
    """The certificate of a quantized variant: it cannot match its float source to 1e-4, so it
    passes on measured quality against thresholds (exporters/quantize.py, --min-top1 ...)."""

    method: str  # e.g. "TFLite full-integer int8, calibrated on the reference batch"
    samples: int  # reference samples evaluated (also the calibration data, where calibrated)
    accuracy: float | None = None  # on reference/labels.npy, where the model has labels
    source_accuracy: float | None = None  # the float source's, on the same samples
    accuracy_drop: float | None = None  # source_accuracy - accuracy (0.01 = 1 point)
    min_top1_agreement: float | None = None  # thresholds in force (None = not checked)
    max_accuracy_drop: float | None = None
    max_abs_error: float | None = None


class Parity(BaseModel):
    ok: bool
    runtime: str  # what executed the artifact for the check
    batch_sizes: list[int]
    tolerance: float | None  # None for a quantized variant: `quantized` holds its thresholds
    max_abs_error: float | None = None  # worst over every output
    top1_agreement: float | None = None  # first classification output
    outputs: dict[str, OutputParity] = Field(default_factory=dict)
    inputs: str | None = None  # how the reference inputs were drawn, and the shapes checked
    error: str | None = None
    quantized: QuantizedCheck | None = None  # a quantized variant's certificate


class RouteFailure(BaseModel):
    route: str
    error: str  # the root cause: innermost exception, operator / layer where known


VARIANT_SEP = ":"  # "tflite:int8-static": the key of a variant in Manifest.artifacts and the
# suffix of the name servers give it ("digits-cnn-torch:int8-static"; the gateway's
# "digits-cnn-torch@tflite:int8-static")


def variant_key(fmt: str, variant: str | None) -> str:
    """The key of an artifact in Manifest.artifacts / Manifest.failed."""
    return f"{fmt}{VARIANT_SEP}{variant}" if variant else fmt


def served_name(model: str, variant: str | None) -> str:
    """The model name a runtime server gives an artifact: the model's, plus ":<variant>"."""
    return f"{model}{VARIANT_SEP}{variant}" if variant else model


class Artifact(BaseModel):
    format: str
    variant: str | None = None  # a quantized variant of the format (None: the float artifact)
    version: int
    path: str  # relative to the model's directory
    bytes: int
    sha256: str
    route: str  # the export route that produced it
    routes_failed: list[RouteFailure] = Field(default_factory=list)  # tried before it
    converters: dict[str, str]
    export_seconds: float
    parity: Parity
    # Shapes the artifact is limited to, when dynamic dims could not convert (input -> shape).
    fixed_shapes: dict[str, list[int]] | None = None
    extra: dict[str, str] = Field(default_factory=dict)


class ExportFailure(BaseModel):
    error: str  # one line: the format, the operator and every route tried
    routes_failed: list[RouteFailure] = Field(default_factory=list)
    log: str | None = None  # the converters' log, relative to the store (kept for the user)
    # Every route needs a package that is not installed (e.g. onnx2torch for Keras -> AOTInductor):
    # the format is not available here, the export itself did not fail.
    unavailable: bool = False


class Reference(BaseModel):
    inputs: str = "reference/inputs.npz"
    outputs: str = "reference/outputs.npz"
    labels: str | None = None


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    source: Source
    signature: Signature
    reference: Reference = Field(default_factory=Reference)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    failed: dict[str, ExportFailure] = Field(default_factory=dict)  # format -> why no artifact

    def artifact_path(self, store: Path, fmt: str) -> Path:
        return Path(store) / self.name / self.artifacts[fmt].path

    def passed(self, fmt: str) -> bool:
        art = self.artifacts.get(fmt)
        return bool(art and art.parity.ok)

    def variants(self, fmt: str) -> dict[str, Artifact | None]:
        """{variant: its artifact, or None where the export failed} of one format."""
        prefix = fmt + VARIANT_SEP
        out: dict[str, Artifact | None] = {k.removeprefix(prefix): None for k in self.failed if k.startswith(prefix)}
        out.update({k.removeprefix(prefix): a for k, a in self.artifacts.items() if k.startswith(prefix)})
        return out

    def certified_variants(self, fmt: str) -> list[str]:
        """The variants of one format whose certificate passed (what can be served), sorted."""
        return sorted(v for v, a in self.variants(fmt).items() if a and a.parity.ok)

    def load_reference(
        self, store: Path
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]:
        """({input: batch}, {output: source outputs}, labels or None) of the held-out batch, in
        signature order."""
        root = Path(store) / self.name
        with np.load(root / self.reference.inputs) as f:
            inputs = {s.name: f[s.name] for s in self.signature.inputs}
        with np.load(root / self.reference.outputs) as f:
            outputs = {s.name: f[s.name] for s in self.signature.outputs}
        labels = np.load(root / self.reference.labels) if self.reference.labels else None
        return inputs, outputs, labels

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / MANIFEST_NAME).write_text(self.model_dump_json(indent=2) + "\n")


def save_reference(model_dir: Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                   labels: np.ndarray | None) -> Reference:  # fmt: skip
    ref = Path(model_dir) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    np.savez(ref / "inputs.npz", **inputs)
    np.savez(ref / "outputs.npz", **outputs)
    if labels is not None:
        np.save(ref / "labels.npy", labels)
    return Reference(labels="reference/labels.npy" if labels is not None else None)


def load_manifest(model_dir: Path) -> Manifest:
    path = Path(model_dir) / MANIFEST_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: unreadable ({e})") from None
    version = doc.get("schema_version", 1) if isinstance(doc, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{path} has manifest schema {version}; this version reads schema {SCHEMA_VERSION} "
            f"(N inputs/outputs, reference arrays per tensor). Re-export the model: `make export` "
            f"for the examples, `python -m exporters export ...` for your own."
        )
    try:
        return Manifest.model_validate(doc)
    except ValidationError as e:
        raise ManifestError(f"{path}: not a valid manifest: {e}") from None


def load_store(store: Path, errors: dict[str, str] | None = None) -> dict[str, Manifest]:
    """Every model in a store, by name. A store without manifests is empty, not an error. A model
    whose manifest cannot be read is left out (logged, and recorded in `errors` if given): one
    broken model never keeps the others from being served."""
    store = Path(store)
    if not store.is_dir():
        return {}
    out: dict[str, Manifest] = {}
    for path in sorted(store.glob(f"*/{MANIFEST_NAME}")):
        try:
            m = load_manifest(path.parent)
        except ManifestError as e:
            log.error("%s", e)
            if errors is not None:
                errors[path.parent.name] = str(e)
            continue
        out[m.name] = m
    return out

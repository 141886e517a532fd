"""The contract between exporters and everything downstream: model_store/<model>/manifest.json.

Layout of a store (built by `make export`, never committed):

    model_store/
      <model>/manifest.json
      <model>/reference/{inputs,outputs,labels}.npy   held-out batch + source-framework outputs
      <model>/onnx/<version>/model.onnx
      <model>/savedmodel/<version>/saved_model.pb ...   (TF Serving layout: base_path = <model>/savedmodel)
      <model>/tflite/<version>/model.tflite
      <model>/torchserve/<version>/<model>.mar
      torchserve/<model>.mar                            TorchServe's --model-store (copies)
      tfserving/models.config                           TF Serving's --model_config_file (paths under /models)

Every artifact of one model takes the same inputs (names, shape, layout, datatype) and returns the
same outputs in the same order as the source model. Datatypes use Open Inference Protocol names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1

Format = Literal["torchserve", "savedmodel", "onnx", "tflite"]
FORMATS: tuple[str, ...] = ("torchserve", "savedmodel", "onnx", "tflite")
# The runtime that serves each artifact format.
RUNTIME_OF_FORMAT: dict[str, str] = {
    "torchserve": "torchserve",
    "savedmodel": "tfserving",
    "onnx": "onnxruntime",
    "tflite": "tflite",
}
FORMAT_OF_RUNTIME: dict[str, str] = {v: k for k, v in RUNTIME_OF_FORMAT.items()}


class TensorSpec(BaseModel):
    name: str
    datatype: str  # OIP name: FP32, INT64, ...
    shape: list[int]  # -1 = variable; shape[0] is always the batch dimension
    layout: str | None = None  # e.g. NCHW / NHWC for images

    @property
    def numpy_dtype(self) -> np.dtype:
        from services.common.codecs import numpy_dtype

        return numpy_dtype(self.datatype)


class Signature(BaseModel):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Source(BaseModel):
    framework: Literal["pytorch", "keras"]
    framework_version: str
    architecture: str
    weights: Literal["trained", "random-init"]
    dataset: str | None = None
    test_accuracy: float | None = None
    # median in-process latency of one sample: torch eager (no_grad), Keras inside a tf.function
    single_sample_ms: float | None = None
    note: str | None = None


class Parity(BaseModel):
    ok: bool
    runtime: str  # what executed the artifact for the check
    batch_sizes: list[int]
    tolerance: float
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    error: str | None = None


class Artifact(BaseModel):
    format: Format
    version: int
    path: str  # relative to the model's directory
    bytes: int
    sha256: str
    route: str  # how it was exported, e.g. "torch.jit.trace -> torch-model-archiver"
    converters: dict[str, str]
    export_seconds: float
    parity: Parity
    extra: dict[str, str] = Field(default_factory=dict)


class Reference(BaseModel):
    inputs: str = "reference/inputs.npy"
    outputs: str = "reference/outputs.npy"
    labels: str | None = None


class Manifest(BaseModel):
    schema_version: int = SCHEMA_VERSION
    name: str
    source: Source
    signature: Signature
    reference: Reference = Field(default_factory=Reference)
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)  # format -> why no artifact was written

    def artifact_path(self, store: Path, fmt: str) -> Path:
        return Path(store) / self.name / self.artifacts[fmt].path

    def passed(self, fmt: str) -> bool:
        art = self.artifacts.get(fmt)
        return bool(art and art.parity.ok)

    def load_reference(self, store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(inputs, source outputs, labels or None) of the held-out reference batch."""
        root = Path(store) / self.name
        labels = np.load(root / self.reference.labels) if self.reference.labels else None
        return np.load(root / self.reference.inputs), np.load(root / self.reference.outputs), labels

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / MANIFEST_NAME).write_text(self.model_dump_json(indent=2) + "\n")


def load_manifest(model_dir: Path) -> Manifest:
    return Manifest.model_validate(json.loads((Path(model_dir) / MANIFEST_NAME).read_text()))


def load_store(store: Path) -> dict[str, Manifest]:
    """Every model in a store, by name. A store without manifests is empty, not an error."""
    store = Path(store)
    if not store.is_dir():
        return {}
    return {
        m.name: m
        for m in (load_manifest(p.parent) for p in sorted(store.glob(f"*/{MANIFEST_NAME}")))
    }

"""The adapter interface a runtime implements; loading every model of one format from a store."""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np

from contract.codec import CodecError
from contract.manifest import Manifest, Signature, TensorSpec, load_store, served_name
from services.settings import StackSettings, select_models

log = logging.getLogger(__name__)


class ModelRuntime(ABC):
    """One loaded artifact. predict() is only ever called from one thread at a time."""

    platform: ClassVar[str]  # OIP metadata "platform", also the server's name
    artifact_format: ClassVar[str]  # key in Manifest.artifacts

    def __init__(self, manifest: Manifest, store: Path, settings: StackSettings, key: str | None = None) -> None:
        """key: the artifact's key in the manifest (a quantized variant's "tflite:int8-static"),
        by default the float artifact of the runtime's format."""
        key = key or self.artifact_format
        self.manifest = manifest
        self.store = Path(store)
        self.artifact = manifest.artifacts[key]
        # a variant is served as its own model, "<model>:<variant>" (contract.manifest.served_name)
        self.name = served_name(manifest.name, self.artifact.variant)
        self.version = str(self.artifact.version)
        self.path = manifest.artifact_path(store, key)
        self.settings = settings
        self.signature: Signature = manifest.signature
        self.inputs: list[TensorSpec] = manifest.signature.inputs
        self.outputs: list[TensorSpec] = manifest.signature.outputs
        # Shapes the artifact is limited to (dynamic dims that did not convert), by input name.
        self.fixed_shapes: dict[str, list[int]] = self.artifact.fixed_shapes or {}

    @property
    def max_batch(self) -> int | None:
        """Samples the artifact takes at most per run, when its batch dimension is fixed."""
        fixed = [f[0] for f in self.fixed_shapes.values() if f and f[0] > 0]
        return min(fixed) if fixed else None

    @classmethod
    @abstractmethod
    def library_version(cls) -> str: ...

    @abstractmethod
    def load(self) -> None:
        """Open the artifact; raise with a clear message if it does not match the manifest."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{input name: batch} (manifest datatypes) -> {output name: batch} in manifest order and
        datatypes."""

    @abstractmethod
    def describe(self) -> str:
        """Thread settings etc. for the start-up log line."""

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """What the codec does not check (CodecError 400): the artifact's fixed shapes, and that
        dynamic dims sharing a name (features and ids: "sequence") have one size across inputs,
        else the runtime fails on them (a 500 for the client's error)."""
        for name, fixed in self.fixed_shapes.items():
            shape = list(inputs[name].shape)
            # the batch dimension is not a limit: run() splits a batch into runs of the fixed size
            if len(shape) != len(fixed) or any(f >= 0 and d != f for d, f in zip(shape[1:], fixed[1:])):
                raise CodecError(
                    f"input {name!r} has shape {shape}; this {self.artifact_format} artifact only "
                    f"takes shape {fixed} (its dynamic dimensions did not convert)"
                )
        named: dict[str, tuple[str, int]] = {}  # a dynamic dim's name -> (first input, size)
        for s in self.inputs:
            arr = inputs[s.name]
            for dim, want, got in zip(s.dims, s.shape, arr.shape):
                # "d<i>" are TensorSpec's default names: they say nothing about other inputs.
                if want < 0 and dim and not re.fullmatch(r"d\d+", dim):
                    first, size = named.setdefault(dim, (s.name, got))
                    if size != got:
                        raise CodecError(f"input {s.name!r} has {dim} {got}, input {first!r} has "
                                         f"{dim} {size}: they must agree")  # fmt: skip

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """predict() in runs of at most settings.run_max_batch samples, or of the artifact's fixed
        batch size if less (e.g. a TFLite LSTM converted with batch 1 so that its sequence stays
        dynamic)."""
        step = min(self.max_batch or self.settings.run_max_batch, self.settings.run_max_batch)
        return in_runs(self.predict, inputs, step)

    def warm_up(self) -> None:
        """One run on the first row of the model's reference batch (cut to the artifact's fixed
        shapes, if any): shapes and values the model accepts (zeros of 1x1 break models with a
        sequence dim or token ids), and the first request does not pay for lazy allocations.
        Raises if the model cannot run it."""
        try:
            reference, _, _ = self.manifest.load_reference(self.store)
        except (OSError, KeyError, ValueError) as e:
            raise RuntimeError(f"no reference batch to warm up with: {e}") from None
        rows = self.max_batch or 1
        inputs = {}
        for s in self.inputs:
            fixed = self.fixed_shapes.get(s.name, [])[1:]
            cut = (slice(0, rows), *(slice(0, f) if f > 0 else slice(None) for f in fixed))
            inputs[s.name] = np.ascontiguousarray(reference[s.name][cut], s.numpy_dtype)
        self.check(inputs)
        outputs = self.run(inputs)
        missing = [s.name for s in self.outputs if s.name not in outputs]
        if missing:
            raise RuntimeError(f"warm-up returned no output(s) {missing}")


def in_runs(
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    inputs: dict[str, np.ndarray],
    step: int,
) -> dict[str, np.ndarray]:
    """predict() over slices of at most `step` samples, outputs concatenated: a runtime's working
    memory (arenas it never gives back) is then that of a `step`-sample run, whatever the request."""
    n = len(next(iter(inputs.values()))) if inputs else 0
    if step < 1 or n <= step:
        return predict(inputs)
    parts = [predict({k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, n, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def load_models(
    runtime_cls: type[ModelRuntime], store: Path, settings: StackSettings, wanted: str = ""
) -> tuple[dict[str, ModelRuntime], dict[str, tuple[str, str]]]:
    """(loaded models by name, {name: (version, reason)} of those that failed) for every model
    with an artifact of the runtime's format, or only the `wanted` ones (NAME[,NAME...]; raises
    UnknownModels before loading anything if one has no such artifact). Quantized variants of a
    selected model are served beside it as "<model>:<variant>". A model that fails to load or
    warm up is reported with its reason; it never keeps the others from being served."""
    fmt = runtime_cls.artifact_format
    manifests = {n: m for n, m in load_store(store).items() if any(a.format == fmt for a in m.artifacts.values())}
    loaded: dict[str, ModelRuntime] = {}
    failed: dict[str, tuple[str, str]] = {}
    chosen = select_models(wanted, manifests, f"among the {fmt} artifacts of {store}")
    keys = [(n, k) for n in chosen for k, a in manifests[n].artifacts.items() if a.format == fmt]
    for base, key in keys:
        manifest = manifests[base]
        art = manifest.artifacts[key]
        name = served_name(base, art.variant)
        try:
            model = runtime_cls(manifest, store, settings, key)
            if not model.path.is_file():
                raise FileNotFoundError(f"artifact {model.path} does not exist")
            model.load()
            model.warm_up()
        except Exception as e:  # noqa: BLE001 - reported per model, the server keeps going
            failed[name] = (str(art.version), f"{type(e).__name__}: {e}")
            log.error("model %s: failed to load %s: %s", name, art.path, failed[name][1])
            continue
        if not art.parity.ok:
            log.warning("model %s: the export's parity check failed (%s)", name, art.parity.error)
        loaded[name] = model
        log.info(
            "loaded model %s version %s (%s %s, %s) from %s",
            name, model.version, model.platform, model.library_version(), model.describe(),
            model.path,
        )
    return loaded, failed

"""The adapter interface a runtime implements; loading every model of one format from a store."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from model_store.manifest import Manifest, TensorSpec, load_store
from services.settings import StackSettings

log = logging.getLogger(__name__)


class ModelRuntime(ABC):
    """One loaded artifact. predict() is only ever called from one thread at a time."""

    platform: ClassVar[str]  # OIP metadata "platform", also the server's name
    artifact_format: ClassVar[str]  # key in Manifest.artifacts

    def __init__(self, manifest: Manifest, store: Path, settings: StackSettings) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = str(manifest.artifacts[self.artifact_format].version)
        self.path = manifest.artifact_path(store, self.artifact_format)
        self.settings = settings
        self.inputs: list[TensorSpec] = manifest.signature.inputs
        self.outputs: list[TensorSpec] = manifest.signature.outputs

    @classmethod
    @abstractmethod
    def library_version(cls) -> str: ...

    @abstractmethod
    def load(self) -> None:
        """Open the artifact; raise with a clear message if it does not match the manifest."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{input name: batch} -> {output name: batch}, outputs in manifest order."""

    @abstractmethod
    def describe(self) -> str:
        """Thread settings etc. for the start-up log line."""

    def warm_up(self) -> None:
        """One batch-1 run, so the first request does not pay for lazy allocations."""
        self.predict(
            {
                s.name: np.zeros([1 if d < 0 else d for d in [1, *s.shape[1:]]], s.numpy_dtype)
                for s in self.inputs
            }
        )


def load_models(
    runtime_cls: type[ModelRuntime], store: Path, settings: StackSettings
) -> tuple[dict[str, ModelRuntime], dict[str, str]]:
    """(loaded models by name, load errors by name) for every model with an artifact of the
    runtime's format. One broken artifact does not keep the others from being served."""
    loaded: dict[str, ModelRuntime] = {}
    failed: dict[str, str] = {}
    for name, manifest in load_store(store).items():
        art = manifest.artifacts.get(runtime_cls.artifact_format)
        if art is None:
            continue
        try:
            model = runtime_cls(manifest, store, settings)
            if not model.path.is_file():
                raise FileNotFoundError(f"artifact {model.path} does not exist")
            model.load()
            model.warm_up()
        except Exception as e:  # noqa: BLE001 - reported per model, the server keeps going
            failed[name] = f"{type(e).__name__}: {e}"
            log.error("model %s: failed to load %s: %s", name, art.path, failed[name])
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

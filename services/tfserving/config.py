"""TF Serving's configuration files, generated from the model store and settings.

- models.config: a ModelServerConfig text proto listing every model with a "savedmodel" artifact
  (name = model name, base_path = <prefix>/<model>/savedmodel, the artifact's version pinned).
- batching parameters: a BatchingParameters text proto mirroring the stack's batching settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contract.manifest import load_store
from services.settings import StackSettings

BATCHING_FILE = Path(__file__).with_name("batching_parameters.txt")
# Batches waiting for the one batch thread before TF Serving answers UNAVAILABLE.
MAX_ENQUEUED_BATCHES = 64


@dataclass(frozen=True)
class SavedModelEntry:
    name: str
    version: int
    base_dir: Path  # <store>/<model>/savedmodel (absolute): TF Serving's base_path
    rel_base: str  # "<model>/savedmodel", relative to the store

    @property
    def version_dir(self) -> Path:
        return self.base_dir / str(self.version)


def savedmodel_entries(store: Path) -> list[SavedModelEntry]:
    """Models of the store that have a SavedModel on disk, sorted by name."""
    store = Path(store).resolve()
    out = []
    for name, manifest in sorted(load_store(store).items()):
        art = manifest.artifacts.get("savedmodel")
        if art is None:
            continue
        version_dir = store / name / art.path
        if version_dir.name == "saved_model.pb":
            version_dir = version_dir.parent
        if not (version_dir / "saved_model.pb").is_file():
            continue
        base = version_dir.parent
        out.append(SavedModelEntry(name, art.version, base, base.relative_to(store).as_posix()))
    return out


def models_config_text(entries: list[SavedModelEntry], base_prefix: str) -> str:
    blocks = []
    for e in entries:
        base_path = f"{base_prefix.rstrip('/')}/{e.rel_base}"
        blocks.append(
            "  config {\n"
            f"    name: {json.dumps(e.name)}\n"
            f"    base_path: {json.dumps(base_path)}\n"
            '    model_platform: "tensorflow"\n'
            f"    model_version_policy {{ specific {{ versions: {e.version} }} }}\n"
            "  }\n"
        )
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def write_models_config(store: Path, out: Path, base_prefix: str) -> Path:
    """Write TF Serving's --model_config_file for `store`; base paths start with base_prefix
    ("/models" in the container, the store's absolute path locally)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(models_config_text(savedmodel_entries(store), base_prefix))
    return out


def allowed_batch_sizes(settings: StackSettings) -> list[int]:
    """TF Serving's allowed_batch_sizes for the stack's batch_max_size: powers of two below it, then
    it (TF Serving requires the last to equal max_batch_size). A formed batch is padded up to the
    next of them, so each size the session sees is one it has run before (fewer shapes, no
    re-planning per odd size) at the cost of computing the padding rows."""
    sizes, n = [], 1
    while n < settings.batch_max_size:
        sizes.append(n)
        n *= 2
    return sizes + [settings.batch_max_size]


def batching_parameters_text(settings: StackSettings) -> str:
    """--batching_parameters_file contents: the stand-in's and our OIP servers' batching policy
    (batch_max_size rows, batch_max_delay_ms) with one batch thread (2 cores, 1 intra-op thread)
    and TF Serving's padding to allowed batch sizes."""
    return (
        f"max_batch_size {{ value: {settings.batch_max_size} }}\n"
        f"batch_timeout_micros {{ value: {round(settings.batch_max_delay_ms * 1000)} }}\n"
        "num_batch_threads { value: 1 }\n"
        f"max_enqueued_batches {{ value: {MAX_ENQUEUED_BATCHES} }}\n"
        + "".join(f"allowed_batch_sizes: {n}\n" for n in allowed_batch_sizes(settings))
    )

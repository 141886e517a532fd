"""Export one source model to the requested formats, certify each, and write it into the store."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters import parity, store
from exporters.sources import SourceModel
from exporters.targets import target
from exporters.workspace import ConversionError, Workspace
from model_store.manifest import FORMATS, Artifact, Manifest, Reference

log = logging.getLogger("exporters")


@dataclass
class Row:
    """One line of the summary table."""

    model: str
    format: str
    ok: bool
    max_abs_error: float | None = None
    bytes: int | None = None
    seconds: float = 0.0
    message: str = ""


def _reference(source: SourceModel, staging: Path) -> Reference:
    ref = staging / "reference"
    ref.mkdir()
    np.save(ref / "inputs.npy", source.reference_inputs)
    np.save(ref / "outputs.npy", source.predict(source.reference_inputs)[0])
    labels = None
    if source.reference_labels is not None:
        np.save(ref / "labels.npy", source.reference_labels)
        labels = "reference/labels.npy"
    return Reference(labels=labels)


def export_model(
    source: SourceModel,
    store_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    version: int = 1,
) -> tuple[Manifest, list[Row]]:
    store_dir = Path(store_dir)
    staging = store.staging_dir(store_dir, source.name)
    manifest = Manifest(name=source.name, source=source.info, signature=source.signature)
    rows: list[Row] = []
    try:
        manifest.reference = _reference(source, staging)
        with tempfile.TemporaryDirectory(prefix=f"export-{source.name}-") as tmp:
            ws = Workspace(source, Path(tmp))
            for fmt in formats:
                rows.append(_export_one(ws, fmt, staging, version, tolerance, manifest))
        manifest.save(staging)
        store.commit(staging, store_dir, source.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest, rows


def _export_one(ws: Workspace, fmt: str, staging: Path, version: int, tolerance: float, manifest: Manifest) -> Row:
    name = ws.source.name
    dest = staging / fmt / str(version)
    dest.mkdir(parents=True)
    log.info("[%s] %s: exporting", name, fmt)
    result: list = []
    try:
        seconds = ws.route_seconds(lambda: result.append(target(fmt).export(ws, dest)))
    except ConversionError as e:
        shutil.rmtree(staging / fmt, ignore_errors=True)
        manifest.failed[fmt] = str(e)
        log.error("[%s] %s: %s", name, fmt, e)
        return Row(name, fmt, False, message=str(e))
    exported = result[0]
    path = dest / exported.filename
    result = parity.check(ws.source, fmt, path, tolerance)
    rel = str(path.relative_to(staging)).removesuffix("/.")
    manifest.artifacts[fmt] = Artifact(
        format=fmt, version=version, path=rel, bytes=store.size(path), sha256=store.sha256(path),
        route=exported.route, converters=exported.converters, export_seconds=round(seconds, 3),
        parity=result, extra=exported.extra,
    )  # fmt: skip
    art = manifest.artifacts[fmt]
    status = "parity ok" if result.ok else f"PARITY FAILED: {result.error}"
    log.info("[%s] %s: %.1f s, %d bytes, max abs error %s, %s", name, fmt, seconds, art.bytes,
             f"{result.max_abs_error:.2e}" if result.max_abs_error is not None else "-", status)  # fmt: skip
    return Row(name, fmt, result.ok, result.max_abs_error, art.bytes, seconds, "" if result.ok else result.error or "")

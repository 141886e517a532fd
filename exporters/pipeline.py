"""Export one source model to the requested formats, certify each, and write it into the store.

Each (source framework, format) has an ordered list of routes (exporters/targets/*.ROUTES). A route
that fails to convert, or whose artifact fails parity, is recorded with its root cause and the next
one is tried; the manifest says which route produced the artifact and why the earlier ones failed.
Every route's converter output goes to <model>/logs/<format>.log (kept in the store)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from contract.manifest import Artifact, ExportFailure, Manifest, RouteFailure, save_reference
from contract.runtimes import FORMATS
from exporters import inputs as ref_inputs
from exporters import parity, store
from exporters.errors import ConversionError, RouteUnavailable, captured, root_cause
from exporters.sources import SourceModel
from exporters.targets import formats_for, routes, target
from exporters.workspace import Workspace

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
    route: str = ""
    unavailable: bool = False  # no route can run here (a package is missing): not a failure


def export_model(
    source: SourceModel,
    store_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    tolerance: float = parity.DEFAULT_TOLERANCE,
    version: int = 1,
    debug: bool = False,
) -> tuple[Manifest, list[Row]]:
    store_dir = Path(store_dir)
    staging = store.staging_dir(store_dir, source.name)
    manifest = Manifest(name=source.name, source=source.info, signature=source.signature)
    rows: list[Row] = []
    skipped = [f for f in formats if f not in formats_for(source.framework, formats)]
    if skipped:  # not a failure: no converter exists (e.g. Keras -> ExecuTorch)
        log.info("[%s] no route from %s to %s: not exported", source.name, source.framework, ", ".join(skipped))
    formats = formats_for(source.framework, formats)
    try:
        ref_inputs.check_meaningful(source.reference_inputs)
        outputs = dict(zip(source.signature.output_names(), parity.reference_outputs(source)))
        ref_inputs.check_outputs_vary(outputs, tolerance)
        manifest.reference = save_reference(staging, source.reference_inputs, outputs, source.reference_labels)
        with tempfile.TemporaryDirectory(prefix=f"export-{source.name}-") as tmp:
            ws = Workspace(source, Path(tmp), None if debug else staging / "logs")
            # ONNX first, then the SavedModel: routes through them (onnx2tf, the translation, the
            # .mar's onnxruntime fallback, TFLite) start from a certified file, not a failed attempt.
            order = {"onnx": 0, "savedmodel": 1}
            done = {fmt: _export_one(ws, fmt, staging, version, tolerance, manifest, store_dir)
                    for fmt in sorted(formats, key=lambda f: order.get(f, 2))}  # fmt: skip
            rows += [done[fmt] for fmt in formats]
        manifest.save(staging)
        store.commit(staging, store_dir, source.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest, rows


def _export_one(ws: Workspace, fmt: str, staging: Path, version: int, tolerance: float, manifest: Manifest,
                store_dir: Path) -> Row:  # fmt: skip
    name = ws.source.name
    failed: list[RouteFailure] = []
    unavailable = 0  # routes that need a package that is not installed
    candidates = routes(fmt, ws.source.framework)
    log_rel = f"{name}/logs/{fmt}.log"
    for route in candidates:
        dest = staging / fmt / str(version)
        shutil.rmtree(staging / fmt, ignore_errors=True)
        dest.mkdir(parents=True)
        ws.log = None if ws.log_dir is None else ws.log_dir / f"{fmt}.log"
        if ws.log is not None:
            ws.log.parent.mkdir(parents=True, exist_ok=True)
            with open(ws.log, "a") as f:
                f.write(f"\n===== route: {route.name}\n")
        log.info("[%s] %s: %s", name, fmt, route.name)
        result: list = []
        try:
            seconds = ws.route_seconds(lambda: result.append(route.export(ws, dest)))
        except ConversionError as e:
            unavailable += isinstance(e, RouteUnavailable)
            failed.append(RouteFailure(route=route.name, error=str(e)))
            log.warning("[%s] %s: route failed: %s", name, fmt, e)
            continue
        except Exception as e:  # noqa: BLE001 - an unforeseen converter failure is still a route failure
            failed.append(RouteFailure(route=route.name, error=root_cause(e)))
            log.warning("[%s] %s: route failed: %s", name, fmt, root_cause(e))
            continue
        exported = result[0]
        path = dest / exported.filename
        with captured(ws.log):  # runtimes print too (XNNPACK, handler log lines)
            cert = parity.check(ws.source, fmt, path, tolerance)
        if not cert.ok and route is not candidates[-1]:
            failed.append(RouteFailure(route=route.name, error=f"parity failed: {cert.error}"))
            log.warning("[%s] %s: parity failed (%s): trying the next route", name, fmt, cert.error)
            continue
        if fmt == "onnx" and cert.ok:
            ws.chosen_onnx = path
        if fmt == "savedmodel" and cert.ok:  # TFLite then starts from the same certified graph
            ws.chosen_via = exported.extra.get("via")
        rel = str(path.relative_to(staging)).removesuffix("/.")
        art = manifest.artifacts[fmt] = Artifact(
            format=fmt, version=version, path=rel, bytes=store.size(path), sha256=store.sha256(path),
            route=route.name, routes_failed=failed, converters=exported.converters,
            export_seconds=round(seconds, 3), parity=cert, fixed_shapes=exported.fixed_shapes, extra=exported.extra,
        )  # fmt: skip
        status = "parity ok" if cert.ok else f"PARITY FAILED: {cert.error}"
        err = f"{cert.max_abs_error:.2e}" if cert.max_abs_error is not None else "-"
        log.info("[%s] %s: %.1f s, %d bytes, max abs error %s, %s", name, fmt, seconds, art.bytes, err, status)
        return Row(name, fmt, cert.ok, cert.max_abs_error, art.bytes, seconds, "" if cert.ok else cert.error or "", route.name)
    shutil.rmtree(staging / fmt, ignore_errors=True)
    tried = "; ".join(f"[{f.route}] {f.error}" for f in failed) or "no route applies"
    where = f"; converter log: {store_dir / log_rel}" if ws.log_dir is not None else ""
    message = f"no {fmt} artifact: {len(failed)} route(s) tried: {tried}{where}"
    not_here = bool(failed) and unavailable == len(failed)
    manifest.failed[fmt] = ExportFailure(error=message, routes_failed=failed, unavailable=not_here,
                                         log=log_rel if ws.log_dir is not None else None)  # fmt: skip
    (log.warning if not_here else log.error)("[%s] %s", name, message)
    return Row(name, fmt, False, message=message, unavailable=not_here)


__all__ = ["Row", "export_model", "target"]

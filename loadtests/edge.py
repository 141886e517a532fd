"""Edge: every certified artifact a device would run in-process, measured at batch 1.

    python -m loadtests.edge [--models a,b] [--store DIR] [--json out.json]
                             [--max-calls 200] [--max-seconds 1.5]

Per model of the store: the float TFLite, ONNX and ExecuTorch artifacts and every quantized variant
of them (manifest keys "<format>:<variant>"). Each certified one is loaded with its serving
adapter's own code (services/<runtime>/runtime.py, 1 intra-op thread as the stack config sets)
and timed over at most max_calls calls or max_seconds after WARMUP_CALLS untimed ones, on the
model's reference samples at full length, round robin; load time, p50/p99, the RSS it added, and
accuracy / top-1 agreement on the samples it ran. An artifact whose certificate failed is listed
with the certificate's reason and not measured: a device should not run it.

One subprocess per runtime family (loadtests/edge_worker.py), run one after another: TensorFlow's
and torch's imports stay out of each other's RSS, and no two measurements share the 2 cores. The
bench runs it after its load phases (loadtests/runner.py) and stores the result under "edge".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from contract.manifest import Artifact, Manifest, load_manifest
from services.settings import REPO_ROOT, StackSettings

# Formats a device runs in-process -> the runtime family (serving adapter) that runs them.
FAMILY_OF_FORMAT = {"tflite": "tflite", "onnx": "onnxruntime", "executorch": "executorch"}
FAMILY_LABELS = {"tflite": "TFLite (LiteRT)", "onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}
WARMUP_CALLS = 3
MAX_CALLS = 200
MAX_SECONDS = 1.5
FAMILY_TIMEOUT_S = 180


def edge_artifacts(manifest: Manifest) -> list[tuple[str, Artifact]]:
    """(key, artifact) of every in-process format and its variants, float first per format."""
    arts = [(k, a) for k, a in manifest.artifacts.items() if a.format in FAMILY_OF_FORMAT]
    order = list(FAMILY_OF_FORMAT)
    return sorted(arts, key=lambda ka: (order.index(ka[1].format), ka[1].variant is not None, ka[0]))


def certificate(art: Artifact) -> dict:
    """What the exporter's certificate says, in figures and one line."""
    p, q = art.parity, art.parity.quantized
    out = {"ok": p.ok, "max_abs_error": p.max_abs_error, "top1_agreement": p.top1_agreement}
    if q is not None:
        out.update(accuracy=q.accuracy, source_accuracy=q.source_accuracy, accuracy_drop=q.accuracy_drop)
        limits = [f"top-1 >= {q.min_top1_agreement:g}" if q.min_top1_agreement is not None else "",
                  f"drop <= {q.max_accuracy_drop * 100:g} pt" if q.max_accuracy_drop is not None else "",
                  f"max err <= {q.max_abs_error:g}" if q.max_abs_error is not None else ""]
        rule = ", ".join(x for x in limits if x)
        out["text"] = (f"{'passed' if p.ok else 'FAILED'} ({rule}; {q.samples} samples)"
                       + ("" if p.ok or not p.error else f": {p.error}"))
    else:
        tol = f"max err <= {p.tolerance:g} x scale" if p.tolerance is not None else "no tolerance"
        out["text"] = f"{'passed' if p.ok else 'FAILED'} ({tol}, batches {p.batch_sizes})" + (
            "" if p.ok or not p.error else f": {p.error}")
    return out


def source_accuracy(manifest: Manifest, store: Path) -> float | None:
    """The float source's accuracy on the reference labels (its own outputs, argmax)."""
    _, outputs, labels = manifest.load_reference(store)
    cls = next((s.name for s in manifest.signature.outputs if len(s.shape) == 2 and s.shape[1] > 1), None)
    if labels is None or cls is None:
        return None
    return round(float(np.mean(np.argmax(outputs[cls], axis=1) == labels)), 4)


def rows_of(manifest: Manifest, store: Path) -> list[dict]:
    """The model's edge rows from its manifest, before measuring: every artifact (certified or
    not) and every export that failed for an in-process format."""
    rows = [{"key": k, "format": a.format, "variant": a.variant, "family": FAMILY_OF_FORMAT[a.format],
             "bytes": a.bytes, "certificate": certificate(a)} for k, a in edge_artifacts(manifest)]
    for key, f in manifest.failed.items():
        fmt = key.partition(":")[0]
        if fmt in FAMILY_OF_FORMAT:
            rows.append({"key": key, "format": fmt, "variant": key.partition(":")[2] or None,
                         "family": FAMILY_OF_FORMAT[fmt], "bytes": None,
                         "not_exported": ("not available here: " if f.unavailable else "") + f.error[:300]})
    return rows


def child_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # As every runtime service sets it before its framework loads (stack.env).
    env["OMP_NUM_THREADS"] = str(StackSettings().omp_num_threads)
    return env


def run_family(family: str, store: Path, models: dict[str, list[str]], limits: dict) -> dict:
    """One worker process over the family's artifacts; its result, or {"error": why}."""
    with tempfile.TemporaryDirectory(prefix=f"edge-{family}-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"family": family, "store": str(store), "models": models, "limits": limits}))
        try:
            p = subprocess.run([sys.executable, "-m", "loadtests.edge_worker", str(job), str(out)],
                               cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                               timeout=FAMILY_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"family": family, "error": f"took over {FAMILY_TIMEOUT_S} s"}
        if p.returncode != 0 or not out.exists():
            tail = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            return {"family": family, "error": f"worker exited {p.returncode}: {tail}"}
        return json.loads(out.read_text())


def measure(store: Path, models: list[str], max_calls: int = MAX_CALLS, max_seconds: float = MAX_SECONDS) -> dict:
    """The "edge" document of results.json: {"models": {model: {framework, weights,
    source_accuracy, rows}}, "families": {family: worker summary}, "limits", "seconds"}."""
    started = time.perf_counter()
    store = Path(store)
    limits = {"warmup_calls": WARMUP_CALLS, "max_calls": max_calls, "max_seconds": max_seconds}
    doc: dict = {"limits": limits, "batch": 1, "models": {}, "families": {}}
    jobs: dict[str, dict[str, list[str]]] = {}
    for model in models:
        m = load_manifest(store / model)
        rows = rows_of(m, store)
        doc["models"][model] = {"framework": m.source.framework, "weights": m.source.weights,
                                "source_accuracy": source_accuracy(m, store), "rows": rows}
        for r in rows:
            if not r.get("certificate", {}).get("ok"):
                continue
            path = m.artifact_path(store, r["key"])
            if path.exists():
                jobs.setdefault(r["family"], {}).setdefault(model, []).append(r["key"])
            else:  # a store copied without its files: say so, start no runtime for it
                r["measured"] = {"error": f"{path} does not exist (re-export the model: make export)"}
    for family in FAMILY_OF_FORMAT.values():
        if family not in jobs:
            continue
        res = run_family(family, store, jobs[family], limits)
        doc["families"][family] = {k: v for k, v in res.items() if k != "artifacts"}
        for model, keys in jobs[family].items():
            got = (res.get("artifacts") or {}).get(model, {})
            for r in doc["models"][model]["rows"]:
                if r["key"] in keys:
                    r["measured"] = got.get(r["key"]) or {"error": res.get("error", "not measured")}
    doc["seconds"] = round(time.perf_counter() - started, 1)
    return doc


def run_attached(store: Path, models: list[str], out: Path) -> dict:
    """For the bench: measure() with its figures also written to `out`; {"error"} if it fails."""
    try:
        doc = measure(store, models)
    except Exception as e:  # noqa: BLE001 - the bench's other results must survive
        return {"error": f"{type(e).__name__}: {e}"}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _f(x, spec: str, none: str = "–") -> str:
    return none if x is None else format(x, spec)


def table(doc: dict) -> str:
    """Plain Markdown, one line per artifact (the report renders its own: edge_report.py)."""
    out = ["| model | artifact | bytes | load s | p50 / p99 ms | RSS +MB | accuracy | top-1 | certificate |",
           "|---|---|---|---|---|---|---|---|---|"]
    for model, m in doc["models"].items():
        for r in m["rows"]:
            meas, cert = r.get("measured") or {}, r.get("certificate") or {}
            if "not_exported" in r or meas.get("error") or not meas:
                why = r.get("not_exported") or meas.get("error") or cert.get("text", "")
                out.append(f"| {model} | {r['key']} | {_f(r['bytes'], ',')} | not measured: {why[:120]} ||||||")
                continue
            out.append(f"| {model} | {r['key']} | {r['bytes']:,} | {meas['load_s']:.3f} | "
                       f"{meas['p50_ms']:.3f} / {meas['p99_ms']:.3f} | {meas['rss_mb']:.1f} | "
                       f"{_f(meas.get('accuracy'), '.3f')} | {_f(meas.get('top1_agreement'), '.3f')} | "
                       f"{cert.get('text', '')} |")
    fam = ", ".join(f"{f} {v.get('seconds', '?')} s" + (f" ({v['error']})" if v.get("error") else "")
                    for f, v in doc["families"].items())
    return "\n".join(out) + f"\n\nedge phase {doc['seconds']} s ({fam})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="comma-separated (default: every model of the store)")
    p.add_argument("--store", type=Path, default=StackSettings().model_store)
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--max-calls", type=int, default=MAX_CALLS)
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    args = p.parse_args(argv)
    have = sorted(d.parent.name for d in args.store.glob("*/manifest.json"))
    models = [m for m in args.models.split(",") if m] or have
    if unknown := [m for m in models if m not in have]:
        print(f"not in the model store {args.store}: {', '.join(unknown)}. The store has: "
              f"{', '.join(have) or 'no models'}", file=sys.stderr)
        return 2
    doc = measure(args.store, models, args.max_calls, args.max_seconds)
    print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

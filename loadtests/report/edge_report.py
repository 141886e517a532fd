"""The report's Edge section, from results["edge"] (loadtests/edge.py): every in-process artifact
of each model at batch 1, with its size, latency, the RSS it added, its accuracy and what its
certificate says; and the helpers the verdict (edge_verdict.py) and the ranking read it with."""

from __future__ import annotations

from pathlib import Path

from loadtests.edge import rounds_text

FAMILY_LABELS = {"tflite": "TFLite", "onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}
TITLE = "Edge: every certified in-process artifact"


def edge_models(results: dict) -> dict[str, dict]:
    """{model: {"framework", "source_accuracy", "rows", ...}} of the bench's edge phase."""
    return ((results.get("edge") or {}).get("models")) or {}


def measured(row: dict) -> dict | None:
    m = row.get("measured")
    return m if m and not m.get("error") else None


def name(row: dict) -> str:
    """'TFLite int8-static', 'ONNX Runtime (float)'."""
    return f"{FAMILY_LABELS.get(row['family'], row['family'])} {row.get('variant') or '(float)'}"


def drop_pt(row: dict, model: dict) -> float | None:
    """Accuracy lost against the float source on the same samples, in points (measured here)."""
    m, src = measured(row), model.get("source_accuracy")
    if not m or m.get("accuracy") is None or src is None:
        return None
    return round((src - m["accuracy"]) * 100, 2)


def size(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def why_not(row: dict) -> str | None:
    """Why a row has no figures: no export, a failed certificate, a failed measurement."""
    if "not_exported" in row:
        return f"not exported: {row['not_exported']}"
    cert = row.get("certificate") or {}
    if not cert.get("ok"):
        return f"**not certified**, not run: {cert.get('text', 'certificate failed')}"
    m = row.get("measured") or {}
    return None if measured(row) else f"not measured: {m.get('error', 'no figures')}"


def _accuracy(row: dict, model: dict) -> str:
    m = measured(row) or {}
    if m.get("accuracy") is None:
        return "no labels" if m else "–"
    d = drop_pt(row, model)
    return f"{m['accuracy']:.3f}" + (f" ({round(-d, 1) + 0.0:+.1f} pt)" if d is not None else "")


def table_rows(model: dict) -> list[list]:
    """One row per artifact: figures, or the reason it has none."""
    out = []
    for r in model.get("rows", []):
        cert = r.get("certificate") or {}
        err = cert.get("max_abs_error")
        head = [f"`{r['key']}`", FAMILY_LABELS.get(r["family"], r["family"]), size(r.get("bytes"))]
        if reason := why_not(r):
            out.append([*head, [reason], "", "", "", "", "", "", ""])
            continue
        m = measured(r)
        top1 = m.get("top1_agreement")
        out.append([*head, f"{m['load_s'] * 1000:.1f}", f"{m['p50_ms']:.3f} / {m['p99_ms']:.3f} ({m['calls']})",
                    rounds_text(m), f"{m['rss_mb']:.1f}", _accuracy(r, model), "–" if top1 is None else f"{top1:.3f}",
                    "–" if err is None else f"{err:.1e}", cert.get("text", "")])  # fmt: skip
    return out


HEADERS = ["artifact", "runtime", "size", "load ms", "p50 / p99 ms (calls)", "p50 per round ms", "RSS +MB",
           "accuracy (vs float source)", "top-1 agreement", "max abs error", "certificate"]


def _intro(edge: dict) -> list[str]:
    lim = edge.get("limits") or {}
    fams = edge.get("families") or {}
    fam = "; ".join(
        f"{FAMILY_LABELS.get(f, f)} {v.get('version', '?')}: {v['error']}" if v.get("error") else
        f"{FAMILY_LABELS.get(f, f)} {v.get('version')} ({v.get('threads')} thread): process {v.get('baseline_rss_mb')} MB "
        f"after imports, +{v.get('setup_rss_mb')} MB runtime set-up, "
        + (f"{v['busy_s']} s busy" if "busy_s" in v else f"{v.get('seconds')} s")
        for f, v in fams.items())  # fmt: skip
    return [
        "What a device would run in-process: the float TFLite, ONNX and ExecuTorch artifacts and every "
        "quantized variant, each loaded with its serving adapter's own code (services/<runtime>/runtime.py), "
        f"batch 1, after {lim.get('warmup_calls')} untimed calls, at most {lim.get('max_calls')} calls or "
        f"{lim.get('max_seconds')} s each, on the model's reference samples at full length (round robin)"
        + (f", split over {lim['rounds']} interleaved rounds: in each, per model, every runtime's process times "
           "its artifacts for its share, one process at a time, runtimes rotated from round to round; the "
           "verdict compares two artifacts round by round, so the machine's drift between their turns is in "
           "its interval. " if lim.get("rounds") else
           ". Measured before interleaved rounds existed: one run per runtime, one after another. ") +
        "RSS +MB is what loading and running the artifact (its first round) added to its process (one "
        "process per runtime, "
        "artifacts kept loaded, the runtime's one-time set-up charged to none of them; under ~1 MB is within "
        "the method's resolution). Accuracy and top-1 "
        "agreement are measured here, one sample at a time, on the reference samples; the drop is against "
        "the float source's own predictions on the same samples; max abs error and the certificate are the "
        "exporter's. An artifact whose certificate failed is not run.",
        f"Runtimes: {fam or 'none measured'}. Edge phase: {edge.get('seconds')} s.",
        "ExecuTorch plans its memory for the artifact's batch bound (the manifest's fixed_shapes, 64 here): "
        "its RSS is that plan's, not batch 1's.",
    ]


def edge_sections(results: dict, out_dir: Path) -> list:
    """The Edge section (build.Section), or [] when the bench has no edge phase."""
    from loadtests.report import plots  # matplotlib: not for the verdict's import of this module
    from loadtests.report.build import Section, Table  # build imports this module

    edge = results.get("edge")
    if not edge:
        return []
    if edge.get("error"):
        return [Section(TITLE, [f"Not measured: {edge['error']}"])]
    tables = [Table(HEADERS, table_rows(m), caption=f"{model} ({m.get('framework')} source"
                    + (f", float source accuracy {m['source_accuracy']:.3f}" if m.get("source_accuracy") is not None
                       else ", no labels") + ")")
              for model, m in edge_models(results).items()]  # fmt: skip
    path = plots.edge_map(edge_models(results), out_dir / "plots" / "edge.png")
    return [Section(TITLE, _intro(edge), tables, [str(path.relative_to(out_dir))] if path else [])]

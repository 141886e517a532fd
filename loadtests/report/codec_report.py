"""The report's "Where the server's time goes: codec vs inference" section and the line saying which
tensor encoding the tables used.

Each closed-loop run through the gateway carries "server_time": what the run added to the
runtime's own histograms ({name: [sum s, count]}, loadtests/server_metrics.py). Summed over the runs
of a (model, runtime), the means per request are: decode (body -> arrays), encode (arrays -> body),
inference per batch (every request waits for its whole batch) and per sample, and the rest of the
server's request time (batching wait, reading the body, the batcher's hand-over).
"""

from __future__ import annotations

from loadtests import server_metrics
# build imports this module; its Section and Table are read when a section is made.
from loadtests.report import build

TITLE = "Where the server's time goes: codec vs inference"
WIRE_WORDS = {"json": "OIP JSON", "binary": "OIP binary tensor extension",
              "tfserving-json": "TF Serving REST JSON"}


def _closed(results: dict) -> list[dict]:
    return [r for r in results.get("runs", [])
            if r.get("via") == "gateway" and r.get("mode") == "closed" and r.get("ok")]


def totals(results: dict) -> dict[tuple[str, str, str], dict | None]:
    """{(model, runtime, encoding): summed server_time of its gateway closed runs, or None when
    no run of it measured one}."""
    out: dict[tuple[str, str, str], dict | None] = {}
    for r in _closed(results):
        key = (r["model"], r["runtime"], r.get("encoding") or "json")
        acc = out.setdefault(key, None)
        if st := r.get("server_time"):
            acc = out[key] = acc or {}
            for name, (s, n) in st.items():
                prev = acc.get(name, [0.0, 0.0])
                acc[name] = [prev[0] + s, prev[1] + n]
    return out


def _mean_ms(t: dict, name: str) -> float | None:
    s, n = t.get(name, (0.0, 0.0))
    return 1000.0 * s / n if n > 0 else None


def split(t: dict) -> dict:
    """Means in ms per request of one (model, runtime) from its summed histograms; None = absent."""
    decode, encode = _mean_ms(t, "decode"), _mean_ms(t, "encode")
    per_batch, request = _mean_ms(t, "inference"), _mean_ms(t, "request")
    samples = t.get("batch_size", (0.0, 0.0))[0]
    batches = t.get("inference", (0.0, 0.0))[1]
    per_sample = 1000.0 * t["inference"][0] / samples if samples and "inference" in t else None
    codec = (decode or 0.0) + (encode or 0.0) if decode is not None or encode is not None else None
    rest = None
    if None not in (request, codec, per_batch):
        rest = request - codec - per_batch
    whole = request if request is not None else (
        codec + per_batch if None not in (codec, per_batch) else None)
    return {"requests": int(t.get("decode", (0, 0))[1]), "decode": decode, "encode": encode,
            "per_batch": per_batch, "per_sample": per_sample,
            "batch_mean": samples / batches if batches else None, "request": request,
            "rest": rest, "codec_share": codec / whole if codec is not None and whole else None}


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def codec_section(results: dict, label) -> build.Section | None:
    """None when no closed-loop gateway run was made."""
    rows = []
    for (model, runtime, enc), t in sorted(totals(results).items()):
        who = [model, label(runtime), WIRE_WORDS.get(enc, enc)]
        if not t:
            why = server_metrics.NOT_MEASURED.get(runtime.partition(":")[0],
                                                  "the runtime's metrics could not be read")
            rows.append([*who, f"not measured: {why}", *["–"] * 7])
            continue
        s = split(t)
        batch = f"{_ms(s['per_batch'])} (x{s['batch_mean']:.2f})" if s["batch_mean"] else "–"
        share = f"**{s['codec_share']:.0%}**" if s["codec_share"] is not None else "–"
        rows.append([*who, str(s["requests"]), _ms(s["decode"]), batch, _ms(s["per_sample"]),
                     _ms(s["encode"]), _ms(s["rest"]), _ms(s["request"]), share])
    if not rows:
        return None
    return build.Section(TITLE, [
        "From the runtimes' own Prometheus histograms, read before and after every closed-loop "
        "run through the gateway and summed over a (model, runtime)'s runs (all user counts): mean "
        "ms per request. *decode*: request body -> validated arrays; *encode*: outputs -> response "
        "body (modelserver_codec_duration_seconds); *inference per batch*: the runtime's call for "
        "the batch the request ran in (x mean samples per batch), which the request waits for "
        "whole; *per sample*: that time divided by the batch's samples (the CPU cost of one "
        "request's inference); *rest*: the server's request time (body read to response built) "
        "minus decode, encode and inference per batch = batching wait, body read and hand-overs; "
        "HTTP parsing and sending are outside it. *codec share*: (decode + encode) / server "
        "request time (TF Serving stand-in, which has no request histogram: / (codec + "
        "inference)). The stand-in's decode over gRPC is TensorProto -> arrays, its encode "
        "arrays -> TensorProto (protobuf serialization itself is gRPC's, not counted)."],
        [build.Table(["model", "runtime", "encoding", "requests", "decode ms",
                      "inference ms per batch", "inference ms per sample", "encode ms",
                      "rest ms", "server request ms", "codec share"], rows)])


def encoding_line(results: dict) -> str:
    """Which tensor encoding every table's runs used, per wire format."""
    sent: dict[str, set[str]] = {}
    for r in results.get("runs", []):
        if r.get("encoding") and r.get("via") != "ceiling":
            sent.setdefault(r["encoding"], set()).add(f"{r['model']}@{r['runtime']} ({r['via']})")
    requested = results.get("encoding", "json (before --encoding existed)")
    parts = [f"{WIRE_WORDS.get(e, e)}: {', '.join(sorted(who))}" for e, who in sorted(sent.items())]
    return (f"**Tensor encoding: {requested}** (`--encoding`; auto = the binary tensor extension "
            "above 64 KB of JSON, JSON below, as production clients do). Sent as "
            + ("; ".join(parts) if parts else "not recorded") + ".")

"""A synthetic results.json, shaped like the bench's, with known answers."""

from __future__ import annotations

RUNTIMES = ("torchserve", "tfserving", "onnxruntime", "tflite")
BASE_RPS = {"torchserve": 400.0, "tfserving": 300.0, "onnxruntime": 900.0, "tflite": 1100.0}
MODELS = {"digits-cnn-torch": 1.0, "digits-cnn-keras": 1.0,
          "mobilenetv2-torch": 0.02, "mobilenetv2-keras": 0.02}


def run(via, mode, model, runtime, users, repeat, rps, rate=0.0, ceiling=5000.0):
    p50 = 1000.0 * users / rps
    return {
        "id": f"{via}-{mode}-{model}-{runtime}-u{users}-rep{repeat}", "via": via, "mode": mode,
        "model": model, "runtime": runtime, "users": users, "repeat": repeat, "rate": rate,
        "ok": True, "requests": int(rps * 3), "failures": 0, "failure_reasons": {},
        "rps": rps, "window_s": 3.0, "served_by": {runtime: int(rps * 3)},
        "latency_ms": {"p50": p50, "p90": p50 * 1.5, "p95": p50 * 1.8, "p99": p50 * 2.5,
                       "mean": p50 * 1.1, "min": p50 * 0.5, "max": p50 * 4},
        "cpu": {"wall_s": 3.0, "busy_pct": 190.0, "groups_pct": {"loadgen": 60.0, runtime: 100.0},
                "other_pct": 30.0 if (model, users, repeat) == ("digits-cnn-torch", 1, 2) else 5.0},
        "noisy": (model, users, repeat) == ("digits-cnn-torch", 1, 2),
        "ceiling_fraction": rps / ceiling,
    }


def rps_of(model: str, runtime: str, users: int) -> float:
    rps = BASE_RPS[runtime] * MODELS[model] * (1.0 if users == 1 else 3.0)
    if runtime == "tflite" and model.endswith("-keras"):
        rps *= 1.5  # a clear difference between the two sources on TFLite
    return rps


def with_aotinductor(res: dict, base_rps: float = 700.0) -> dict:
    """res plus AOTInductor runs of the torch-source models (Keras sources have no .pt2)."""
    repeats = res["profile"]["repeats"]
    for rep in range(1, repeats + 1):
        jitter = 1 + 0.02 * (1 if rep % 2 else -1)
        for model, scale in MODELS.items():
            if model.endswith("-torch"):
                for users in (1, 8):
                    rps = base_rps * scale * (1.0 if users == 1 else 3.0)
                    res["runs"].append(run("gateway", "closed", model, "aotinductor", users, rep, rps * jitter))
    return res


def results(repeats: int = 3, spread: float = 0.02) -> dict:
    runs = []
    for rep in range(1, repeats + 1):
        jitter = 1 + spread * (1 if rep % 2 else -1)
        for model in MODELS:
            runs.append(run("ceiling", "closed", model, "ceiling", 8, rep, 5000.0 * jitter))
            for runtime in RUNTIMES:
                for users in (1, 8):
                    runs.append(run("gateway", "closed", model, runtime, users, rep,
                                    rps_of(model, runtime, users) * jitter))
                runs.append(run("gateway", "open", model, runtime, 8, rep,
                                rps_of(model, "tfserving", 8) * 0.5 * jitter,
                                rate=rps_of(model, "tfserving", 8) * 0.5))
                if model == "digits-cnn-torch":
                    runs.append(run("direct", "closed", model, runtime, 8, rep,
                                    rps_of(model, runtime, 8) * 1.2 * jitter))
    runs.append({"id": "gateway-closed-x-tflite-u1-rep1", "via": "gateway", "mode": "closed",
                 "model": "digits-cnn-torch", "runtime": "tflite", "users": 1, "repeat": 3,
                 "ok": False, "error": "no result (exit code 1)"})
    sizes = {"torchserve": 600_000, "savedmodel": 900_000, "onnx": 400_000, "tflite": 390_000}
    return {
        "schema": 1,
        "profile": {"name": "synthetic", "repeats": repeats, "warmup_s": 1.0, "window_s": 3.0,
                    "ref_users": 8, "open_fraction": 0.5, "open_users": 8},
        "started": "2026-11-21T00:00:00+00:00", "finished": "2026-11-21T00:08:00+00:00",
        "environment": {"cpu_model": "Test CPU", "cores": 2, "memory_gb": 24.0, "os": "Linux",
                        "python": "3.11", "packages": {"locust": "2.47.0", "torch": "2.13.0"},
                        "tensorflow_model_server": None,
                        "settings": {"omp_num_threads": 1, "batch_max_size": 8,
                                     "torchserve_workers": 1, "gateway_port": 8000}},
        "tfserving": {"kind": "stand-in", "detail": "X-Served-By: tfserving-standin"},
        "services": {
            "gateway": {"pids": [1], "rss_mb_idle": 80.0, "rss_mb_peak": 90.0, "startup_s": 1.2},
            "torchserve": {"pids": [2], "rss_mb_idle": 900.0, "rss_mb_peak": 950.0, "startup_s": None},
            "tfserving": {"pids": [3], "rss_mb_idle": 700.0, "rss_mb_peak": 720.0, "startup_s": 4.0},
            "onnxruntime": {"pids": [4], "rss_mb_idle": 150.0, "rss_mb_peak": 160.0, "startup_s": 1.0},
            "tflite": {"pids": [5], "rss_mb_idle": 120.0, "rss_mb_peak": 130.0, "startup_s": 0.9},
        },
        "state_file": "/x/.run/state.json",
        "models": {m: {"framework": "pytorch" if m.endswith("torch") else "keras",
                       "architecture": m.rsplit("-", 1)[0], "weights": "trained",
                       "artifacts": {f: {"bytes": b, "parity_ok": True, "route": "r"}
                                     for f, b in sizes.items()}} for m in MODELS},
        "ceilings": {m: 5000.0 for m in MODELS},
        "ceiling_of": {m: m for m in MODELS},
        "open_rates": {m: rps_of(m, "tfserving", 8) * 0.5 for m in MODELS},
        "skipped": [{"via": "gateway", "model": None, "runtime": None,
                     "reason": "digits-mlp-torch: not in the model store"},
                    {"via": "direct", "model": "digits-cnn-torch", "runtime": "tflite",
                     "reason": "HTTP 503"}],
        "runs": runs,
    }


def edge_row(key: str, nbytes: int, p50: float | None, accuracy: float | None = 0.97, rss: float = 1.0,
             ok: bool = True, seed: int = 0) -> dict:
    """One artifact of results["edge"]: measured around p50 ms (None: its certificate failed)."""
    import numpy as np

    fmt, _, variant = key.partition(":")
    family = {"tflite": "tflite", "onnx": "onnxruntime", "executorch": "executorch"}[fmt]
    cert = {"ok": ok, "max_abs_error": 0.05 if variant else 1e-5, "top1_agreement": 1.0 if ok else 0.2,
            "text": "passed (top-1 >= 0.98)" if ok else "FAILED (top-1 >= 0.98): top-1 agreement 0.2 is below 0.98"}
    row = {"key": key, "format": fmt, "variant": variant or None, "family": family, "bytes": nbytes,
           "certificate": cert}
    if ok and p50 is not None:
        lat = list(p50 * np.exp(np.random.default_rng(seed).normal(0, 0.05, 200)))
        row["measured"] = {"load_s": 0.002, "first_call_ms": 1.0, "calls": 200, "p50_ms": float(np.median(lat)),
                           "p99_ms": float(np.percentile(lat, 99)), "latencies_ms": lat, "rss_mb": rss,
                           "rss_load_mb": rss, "top1_agreement": 1.0, "quality_samples": 32,
                           **({} if accuracy is None else {"accuracy": accuracy})}
    return row


def with_edge(res: dict) -> dict:
    """res plus an edge phase of the digits-cnn pair with known answers: torch source, TFLite
    int8-dynamic (0.020 ms) and ONNX int8-static (0.021 ms) tie, ExecuTorch float 0.050 ms, the
    smallest is ONNX int8-dynamic (45,000 B, 0.080 ms); TFLite int8-static failed its certificate.
    Keras source: TFLite int8-dynamic 0.020 ms clearly ahead of ONNX int8-dynamic 0.090 ms."""
    torch_rows = [edge_row("tflite", 157_000, 0.030, seed=1), edge_row("tflite:int8-dynamic", 46_200, 0.020, seed=2),
                  edge_row("tflite:int8-static", 46_400, None, ok=False),
                  edge_row("onnx", 155_000, 0.030, seed=3), edge_row("onnx:int8-dynamic", 45_000, 0.080, seed=4),
                  edge_row("onnx:int8-static", 46_500, 0.021, accuracy=0.94, seed=5),
                  edge_row("executorch", 159_000, 0.050, rss=2.0, seed=6)]  # fmt: skip
    keras_rows = [edge_row("tflite", 157_000, 0.030, seed=7), edge_row("tflite:int8-dynamic", 46_000, 0.020, seed=8),
                  edge_row("onnx", 156_000, 0.035, seed=9), edge_row("onnx:int8-dynamic", 48_000, 0.090, seed=10)]
    res["edge"] = {
        "limits": {"warmup_calls": 3, "max_calls": 200, "max_seconds": 1.5}, "batch": 1, "seconds": 21.5,
        "families": {f: {"family": f, "version": "1", "threads": 1, "baseline_rss_mb": 60.0, "setup_rss_mb": 4.0,
                         "seconds": 5.0} for f in ("tflite", "onnxruntime", "executorch")},
        "models": {"digits-cnn-torch": {"framework": "pytorch", "weights": "trained", "source_accuracy": 0.97,
                                        "rows": torch_rows},
                   "digits-cnn-keras": {"framework": "keras", "weights": "trained", "source_accuracy": 0.97,
                                        "rows": keras_rows}},
    }  # fmt: skip
    return res

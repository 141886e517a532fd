"""Single-request latency of every runtime, sequential requests on one keep-alive connection:

    python -m loadtests.latency [--models digits-cnn-torch,digits-cnn-keras] [--via direct|gateway]
                                [--requests 500] [--warmup 50] [--encoding auto|json|binary]

Uses the bench's own payloads and response checks (loadtests/payloads.py) against the running
stack (`make up`); prints p50/p99 per (model, runtime)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx

from loadtests import payloads
from services.settings import StackSettings


def measure(target: payloads.Target, payload: payloads.Payload, url: str, headers: dict,
            requests: int, warmup: int) -> list[float]:  # fmt: skip
    times = []
    with httpx.Client(timeout=30, headers=headers) as client:
        for i in range(warmup + requests):
            k = i % len(payload.bodies)
            start = time.perf_counter()
            r = client.post(url, content=payload.bodies[k], headers=payload.headers(k))
            elapsed = time.perf_counter() - start
            problem = payloads.check_response(payload, k, r.status_code, r.content, r.headers.get("x-served-by"),
                                              payloads.header_len(r.headers))
            if problem:
                raise RuntimeError(f"{target.name}: {problem}: {r.text[:200]}")
            if i >= warmup:
                times.append(elapsed * 1000)
    return sorted(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits-cnn-torch,digits-cnn-keras")
    ap.add_argument("--runtimes", default="onnxruntime,tflite,tfserving,torchserve")
    ap.add_argument("--via", choices=("direct", "gateway"), default="direct")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--encoding", choices=payloads.ENCODINGS, default="auto",
                    help="tensor encoding (loadtests/payloads.py): auto, json or binary")
    args = ap.parse_args(argv)
    settings = StackSettings()
    store = settings.model_store
    targets, manifests, skipped = payloads.resolve_targets(
        store, args.models.split(","), args.runtimes.split(","), args.via
    )
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    headers = payloads.auth_headers(settings) if args.via == "gateway" else {}
    print(f"{args.requests} sequential requests after {args.warmup} warm-up, batch 1, one keep-alive "
          f"connection (httpx), via {args.via}")  # fmt: skip
    for t in targets:
        payload = payloads.build_payload(t, manifests[t.model], store, encoding=args.encoding)
        try:
            times = measure(t, payload, payloads.base_url(t, settings) + t.path, headers, args.requests, args.warmup)
        except httpx.TransportError as e:
            print(f"{t.name}: cannot reach it ({e}); is the stack up (`make up`)?", file=sys.stderr)
            return 2
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"{t.model:<20} {t.runtime:<12} {payload.encoding:<14} p50 {statistics.median(times):7.2f} ms   p99 {p99:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

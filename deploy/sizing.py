"""Measured per-service sizing: the figures the Kubernetes manifests request, as plain data.

Every figure below was measured on this project's development machine and says how (MEASURED_ON,
and a comment per service). container_resources() turns them into a container's `resources:`
block; deploy/capacity.py multiplies the "large" profile's block by the replica count it plans.

Profiles
- "small": the whole stack (6 runtimes, the gateway, one Locust worker) on ONE node of
  SMALL_NODE's size; the test suite asserts that the requests and the memory limits fit its
  allocatable share.
- "large": one core per runtime replica (each runtime runs 1 intra-op thread: services/stack.env),
  one core per gateway replica (one uvicorn event loop) and per Locust worker (one gevent loop):
  the unit deploy/capacity.py scales by.

Memory: request = steady RSS (models loaded and warmed by traffic), limit = peak RSS seen under
the bench x MEMORY_HEADROOM; both rounded up to 64 Mi. The limit is set because memory is not
compressible: a leaking or oversized replica is better OOM-killed and restarted alone than letting
the node's kubelet evict its neighbours.

CPU: a request, no limit. "small" gives each service half a core (TorchServe 0.75: its Java
frontend too; the runtimes added since less: SMALL_CPU_M), 3.6 CPU in all; "large" one core per
replica. A CPU limit is a CFS quota per 100 ms period: a server that spends its quota early in a
period (a burst of requests, a batch, the Python GC) is frozen for the rest of it, which turns
into tens of milliseconds of tail latency for requests that took 1-10 ms here. The request
already guarantees the core's share under contention (and decides scheduling); spare cycles on
the node are better used than throttled. Set a limit only where a namespace's LimitRange demands one.
"""

from __future__ import annotations

import math

from contract.runtimes import RUNTIMES as REGISTRY

MIB = 1
GIB = 1024 * MIB
ROUND_MI = 64
MEMORY_HEADROOM = 1.5  # limit = peak x 1.5: longer sequences / larger batches than the bench sent,
# allocator fragmentation over days of uptime; a limit that is hit in normal use is a crash loop.

# The node of the "small" profile, and what a kubelet leaves to pods on it (kube-reserved +
# system-reserved + eviction threshold; managed clusters reserve roughly 0.1-0.4 CPU and
# 1.5-2.6 GiB on a 4-CPU / 16 GiB node, so assume the worse end).
SMALL_NODE = {"cpu_m": 4000, "memory_mi": 16 * GIB}
SMALL_NODE_ALLOCATABLE = {"cpu_m": 3600, "memory_mi": 13 * GIB}

MEASURED_ON = (
    "2026-12-06 21:59-22:15 UTC, AMD EPYC, 2 cores, 23.5 GiB, Debian 12, Python 3.11; `make up` "
    "over the 8 example models (digits-mlp, digits-cnn, digits-transformer, mobilenetv2; torch and "
    "keras each) on every runtime; services/stack.env defaults (1 intra-op thread per runtime, "
    "TORCHSERVE_WORKERS=1: one Python worker per model). The machine was shared: load average "
    "3.6-9.8, other processes used a median 99% of one core during the bench's windows."
)
# How (the scripts were one-offs; the bench and gateway_overhead are the repo's own):
# - RSS: psutil, every 0.5 s, of each service's whole process tree (loadtests.monitor.
#   discover_services + rss_mb: the supervisor's state file and the listening ports), and of the
#   `locust --headless` process. "steady" = median while idle after the bench (models warmed by
#   traffic: ONNX Runtime / LiteRT keep their MobileNetV2 arenas, hence 2.5x their after-`make up`
#   figure, which is in the comment); "peak" = the highest sample during the bench.
# - Load: loadtests' runner (runner.bench) with the profile "full" narrowed to mobilenetv2-torch,
#   mobilenetv2-keras, digits-transformer-torch, digits-transformer-keras, users 1,2,4,8,16,
#   1 repeat, 1 s warm-up + 3 s window (82 runs, 9.5 min), results
#   loadtests/reports/capacity-20261206/results.json (not committed).
# - CPU per request of a runtime: its process tree's CPU time over the window / requests, at 16
#   users (saturation here), from that results.json. Of the gateway: `make bench-gateway`
#   (loadtests/gateway_overhead.py: digits-cnn-torch on ONNX Runtime, JSON, 32 connections),
#   "cpu_us_per_request_at_saturation" of the gateway arm; per model from the bench at 16 users
#   through the runtime that served the most requests (least idle cost per request). It grows
#   with the payload: a MobileNetV2 request is ~1.5 MB of JSON that the gateway decodes,
#   validates and re-encodes.

# (steady, peak) RSS in MiB of each service's process tree, 8 models loaded; "after up" is the
# figure right after `make up`, before any traffic.
RSS_MIB: dict[str, tuple[float, float]] = {
    "onnxruntime": (446, 499),  # our OIP server over ONNX Runtime; after up 196
    "tflite": (468, 499),  # the same server core over ai-edge-litert; after up 171
    # The TF Serving STAND-IN (services/tfserving: tf.saved_model under our REST/gRPC front;
    # tensorflow_model_server is not installable here); after up 986. The real
    # tensorflow_model_server (KServe's kserve-tensorflow-serving) differs: re-measure it.
    "tfserving": (1143, 1303),
    # TorchServe 0.12: Java frontend + one Python worker per model (8), summed over the tree;
    # after up 2391. ~300 MiB per model: a single-model replica needs much less (deploy/capacity.py
    # says it uses this 8-model figure as an upper bound).
    "torchserve": (2590, 2592),
    # Our OIP server over AOTInductor .pt2 packages, the 4 torch-source examples loaded (Keras
    # sources have none); after up 373. PROVISIONAL: not the capacity bench above but a direct
    # 8-user run per model (MobileNetV2 20 s, transformer and CNN 10 s each) on a loaded machine
    # (load average 4-5), 2026-12-07.
    "aotinductor": (478, 505),
    # Our OIP server over ExecuTorch .pte programs (XNNPACK), the 4 torch-source examples loaded;
    # after up 644 (importing executorch.runtime loads torch, torchao and exir). PROVISIONAL, as
    # AOTInductor's: a direct 8-user run per model (MobileNetV2 20 s, transformer and CNN 10 s,
    # MLP 5 s), twice, load average 2-6, 2026-12-07.
    "executorch": (702, 727),
    "gateway": (153, 244),  # one uvicorn process; after up 74; peak: MobileNetV2 bodies in flight
    # One headless Locust process (FastHttpUser, as a compose/Kubernetes worker runs it): median
    # and peak over the bench's 82 runs (a MobileNetV2 run pre-encodes 32 bodies of ~1.5 MB).
    "locust": (75, 140),
}
# CPU microseconds per request at 16 users, one column per model (see "How" above). locust: the
# bench's load-generator group (Locust + the bench's own process).
CPU_US_MODELS = ("mobilenetv2-torch", "mobilenetv2-keras",
                 "digits-transformer-torch", "digits-transformer-keras")
CPU_US_PER_REQUEST: dict[str, tuple[float | None, ...]] = {
    "onnxruntime": (30891, 56888, 931, 1418),
    "tflite": (33356, 24789, 939, 1039),
    "tfserving": (78432, 611276, 1253, 2833),
    "torchserve": (167392, 168046, 2216, 2784),
    # PROVISIONAL (see RSS_MIB): direct at 8 users, not through the gateway at 16; no Keras-source
    # artifacts (None).
    "aotinductor": (17719, None, 676, None),
    # PROVISIONAL (see RSS_MIB), as AOTInductor's. The transformer runs on portable kernels
    # (services/executorch/README.md).
    "executorch": (39926, None, 3070, None),
    "gateway": (12398, 9275, 525, 587),
    "locust": (4884, 4126, 561, 663),
}
GATEWAY_REFERENCE_MODEL = "digits-cnn-torch"  # the model of `make bench-gateway`
GATEWAY_REFERENCE_CPU_US = 592  # its "cpu_us_per_request_at_saturation" of the gateway arm

LARGE_CPU_M = 1000  # one core per replica
# TorchServe: the Java frontend's share on top of its worker's. AOTInductor, the fifth runtime:
# 250, and ExecuTorch, the sixth: 100, keep the requests within SMALL_NODE's allocatable 3.6 CPU
# (a request is the share guaranteed under contention, not a cap: no CPU limits). Others 500.
SMALL_CPU_M = {"torchserve": 750, "aotinductor": 250, "executorch": 100}

SERVICES: dict[str, dict] = {
    name: {"steady_rss_mib": steady, "peak_rss_mib": peak,
           "cpu_us_per_request": dict(zip(CPU_US_MODELS, CPU_US_PER_REQUEST[name]))
           | ({GATEWAY_REFERENCE_MODEL: GATEWAY_REFERENCE_CPU_US} if name == "gateway" else {}),
           "cpu_m": {"small": SMALL_CPU_M.get(name, 500), "large": LARGE_CPU_M}}
    for name, (steady, peak) in RSS_MIB.items()
}

RUNTIMES = tuple(REGISTRY)  # every registered runtime is sized above (tests/deploy/test_capacity.py)


def _round_up_mi(mib: float) -> int:
    return int(math.ceil(mib / ROUND_MI) * ROUND_MI)


def _quantity_mi(mib: int) -> str:
    return f"{mib // GIB}Gi" if mib % GIB == 0 else f"{mib}Mi"


def memory_mi(service: str) -> tuple[int, int]:
    """(request, limit) in MiB, both multiples of 64."""
    s = _service(service)
    request = _round_up_mi(s["steady_rss_mib"])
    return request, max(request, _round_up_mi(s["peak_rss_mib"] * MEMORY_HEADROOM))


def cpu_m(service: str, profile: str = "small") -> int:
    """CPU request in millicores."""
    s = _service(service)
    if profile not in s["cpu_m"]:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(s['cpu_m'])}")
    return s["cpu_m"][profile]


def container_resources(service: str, profile: str = "small") -> dict:
    """Kubernetes resources for a service's container, e.g.
    {"requests": {"cpu": "500m", "memory": "640Mi"}, "limits": {"memory": "1Gi"}}:
    memory request = steady RSS, memory limit = peak RSS x MEMORY_HEADROOM (both rounded up to
    64 Mi), CPU request from the profile ("small": the stack on one SMALL_NODE; "large": one core
    per replica), no CPU limit (see the module docstring)."""
    request, limit = memory_mi(service)
    return {
        "requests": {"cpu": f"{cpu_m(service, profile)}m", "memory": _quantity_mi(request)},
        "limits": {"memory": _quantity_mi(limit)},
    }


def _service(service: str) -> dict:
    try:
        return SERVICES[service]
    except KeyError:
        raise ValueError(
            f"unknown service {service!r}; known services: {', '.join(SERVICES)}") from None

"""Server-side time of a run from the runtimes' own Prometheus metrics: scraped before and after a
closed-loop run, the difference of the histogram sums and counts says where the server's time went
(codec decode / encode, inference per batch, the whole request) for the run's model.

Our OIP servers (services/common/modelserver) serve GET /metrics; the TF Serving stand-in serves
the same histograms (less the request duration) at TF Serving's /monitoring/prometheus/metrics.
TorchServe is not measured: its codec runs in the handler packed into each .mar at export, and its
own metrics have no decode/encode split (see report/codec_report.py).
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from contract.runtimes import RUNTIMES
from services.settings import StackSettings

# Histogram base name -> key in a snapshot (the codec histogram is split by stage).
HISTOGRAMS = {
    "gateway_request_duration_seconds": "gateway",  # the gateway's own /metrics
    "modelserver_request_duration_seconds": "request",
    "modelserver_inference_duration_seconds": "inference",
    "modelserver_batch_size": "batch_size",
    "modelserver_codec_duration_seconds": "codec",
}
NOT_MEASURED = {"torchserve": "TorchServe's codec runs in the .mar's handler; its metrics have "
                              "no decode/encode split"}


def metrics_url(runtime: str, settings: StackSettings) -> str | None:
    """Where a runtime serves the histograms above, or None (NOT_MEASURED says why)."""
    base = settings.runtime_url(runtime.partition(":")[0])
    protocol = RUNTIMES[runtime.partition(":")[0]].protocol
    return {"oip": base + "/metrics",
            "tfserving": base + "/monitoring/prometheus/metrics"}.get(protocol)


def _is_model(label: str | None, model: str) -> bool:
    """The model's label: its served name, or "<name>:<version>" (the TF Serving stand-in's)."""
    version = (label or "").removeprefix(model + ":")
    return label == model or (version != label and version.isdigit())


def parse(text: str, model: str) -> dict[str, list[float]]:
    """{"gateway"|"request"|"inference"|"batch_size"|"decode"|"encode": [sum, count]} of one
    model, summed over its other labels (endpoint, runtime)."""
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        key = HISTOGRAMS.get(family.name)
        if key is None:
            continue
        for s in family.samples:
            if not _is_model(s.labels.get("model"), model) or not s.name.endswith(("_sum", "_count")):
                continue
            name = s.labels.get("stage", key) if key == "codec" else key
            out.setdefault(name, [0.0, 0.0])[s.name.endswith("_count")] += s.value
    return out


def scrape(url: str | None, model: str, timeout: float = 3.0) -> dict[str, list[float]] | None:
    """One model's snapshot from a runtime's metrics, or None if it cannot be read (a run is
    then reported without a server-side split rather than failing)."""
    if url is None:
        return None
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError:
        return None
    return parse(r.text, model) if r.status_code == 200 else None


def delta(before: dict | None, after: dict | None) -> dict[str, list[float]] | None:
    """What a run added: after - before, per histogram [sum, count]."""
    if before is None or after is None:
        return None
    zero = [0.0, 0.0]
    return {k: [a[0] - before.get(k, zero)[0], a[1] - before.get(k, zero)[1]]
            for k, a in after.items()}


def mean(added: dict | None, key: str, scale: float = 1.0) -> float | None:
    """Mean of one histogram over what a delta() added (x scale, e.g. 1000 for ms); None when
    nothing was observed."""
    total, n = (added or {}).get(key, (0.0, 0.0))
    return scale * total / n if n > 0 else None

"""TorchServe readiness: /ping says Healthy before any worker has loaded its model, so ask the
management API whether each model has a READY worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


def model_ready(management_url: str, model: str, timeout: float = 2.0) -> bool:
    url = f"{management_url.rstrip('/')}/models/{model}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            described = json.load(r)
    except (OSError, ValueError):  # connection refused, 404 while registering, bad JSON
        return False
    return any(
        w.get("status") == "READY" for version in described for w in version.get("workers", [])
    )


def list_models(management_url: str, timeout: float = 2.0) -> list[str]:
    with urllib.request.urlopen(f"{management_url.rstrip('/')}/models", timeout=timeout) as r:
        return [m["modelName"] for m in json.load(r).get("models", [])]


def wait_until_ready(
    management_url: str, models: list[str] | None = None, timeout: float = 120.0
) -> None:
    """Block until every model (all registered ones if None) has a READY worker.

    management_url is e.g. "http://127.0.0.1:8081". Raises TimeoutError naming the models that
    are still not ready.
    """
    deadline = time.monotonic() + timeout
    pending: list[str] | None = list(models) if models is not None else None
    while True:
        if pending is None:
            try:
                pending = list_models(management_url)
            except (OSError, ValueError):
                pass
        if pending is not None:
            pending = [m for m in pending if not model_ready(management_url, m)]
            if not pending:
                return
        if time.monotonic() > deadline:
            what = ", ".join(pending) if pending else "the management API"
            raise TimeoutError(f"TorchServe {management_url}: not ready after {timeout}s: {what}")
        time.sleep(0.25)

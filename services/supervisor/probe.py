"""Readiness = a real inference per model, not a ping (TorchServe's /ping is Healthy before its
workers load). One probe per protocol, built from a spec's `probe` dict:

  {"kind": "http", "url": ...}                                  GET -> 200
  {"kind": "oip", "url", "format", "store"[, "models"]}        POST /v2/models/<m>/infer
  {"kind": "tfserving", "url", "format", "store"}               POST /v1/models/<m>:predict
  {"kind": "torchserve", "url", "format", "store", "management_url"[, "models"]}
      every model has a READY worker (services.torchserve.wait_until_ready, if importable), then
      POST /predictions/<m> with an OIP JSON body

Models are those of the store whose artifact of `format` passed its parity check (only those
named in "models", STACK_MODELS's NAME[,NAME...], when it is set: the server serves no other);
the inputs are the first row of each of the model's reference arrays (every input, in its
manifest datatype).
With no such model the probe falls back to the protocol's health endpoint.

Also the containers' healthcheck: `python -m services.supervisor.probe <service> [--host H]`.
Stdlib + numpy + contract only, so it runs in every image.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEALTH_PATH = {"oip": "/v2/health/ready", "tfserving": "/v1/models", "torchserve": "/ping"}
# TF Serving has no server-level health endpoint: with no model, any HTTP answer means "up".
HEALTH_ANY_STATUS = {"tfserving"}


class NotReady(Exception):
    """The service did not (yet) answer as expected; the message says what happened."""


class ModelUnavailable(Exception):
    """The server is up and says this one model failed to load (HTTP 503 "failed to load"): the
    service is ready without it, the model unavailable with its reason."""


@dataclass
class Request:
    what: str  # e.g. "model digits-mlp-torch"
    model: str | None
    url: str
    body: bytes | None  # None -> GET
    expect_key: str | None  # a key the JSON answer must have
    any_status: bool = False  # an HTTP error status still counts as an answer


def _http(req: Request, timeout: float) -> None:
    headers = {"Content-Type": "application/json"} if req.body is not None else {}
    r = urllib.request.Request(req.url, data=req.body, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            payload = resp.read()
    except urllib.error.HTTPError as e:
        if req.any_status:
            return
        detail = e.read()[:300].decode(errors="replace")
        if e.code == 503 and "failed to load" in detail:
            raise ModelUnavailable(detail) from None
        raise NotReady(f"{req.what}: HTTP {e.code} from {req.url}: {detail}") from None
    except (OSError, urllib.error.URLError) as e:
        raise NotReady(f"{req.what}: {req.url}: {getattr(e, 'reason', e)}") from None
    if req.expect_key:
        try:
            ok = req.expect_key in json.loads(payload)
        except ValueError:
            ok = False
        if not ok:
            raise NotReady(f"{req.what}: answer without {req.expect_key!r}: {payload[:200]!r}")


def _model_requests(kind: str, url: str, fmt: str, store: Path, models: str = "") -> list[Request]:
    from contract.manifest import load_store

    served = {n.strip() for n in models.split(",") if n.strip()}
    requests = []
    for name, m in load_store(store).items():
        if not m.passed(fmt) or (served and name not in served):
            continue
        from contract.codec import InferRequest

        reference = m.load_reference(store)[0]
        # Every input, first row of the reference batch, in the manifest's datatype.
        req = InferRequest.from_arrays({s.name: np.ascontiguousarray(reference[s.name][:1], s.numpy_dtype)
                                        for s in m.signature.inputs})  # fmt: skip
        if kind == "tfserving":
            body, path = req.to_tfserving(), f"/v1/models/{name}:predict"
        else:
            body = req.to_oip()[0]
            path = f"/v2/models/{name}/infer" if kind == "oip" else f"/predictions/{name}"
        requests.append(Request(f"model {name}", name, url + path, body, "outputs"))
    return requests


# Liveness: the process still answers HTTP at all (any status; no inference, cheap).
LIVE_PATH = {"oip": "/v2/health/live", "tfserving": "/v1/models", "torchserve": "/ping",
             "http": ""}


def live(probe: dict, timeout: float) -> None:
    """Raises NotReady if the service does not answer an HTTP request within `timeout` (alive
    but hung: SIGSTOP, a deadlock, a GIL-holding loop)."""
    kind = probe["kind"]
    url = probe["url"].rstrip("/") + LIVE_PATH[kind]
    if kind == "http":  # the gateway's readiness URL; liveness is its sibling
        url = url.replace("/v2/health/ready", "/v2/health/live")
    _http(Request("liveness", None, url, None, None, any_status=True), timeout)


class Probe:
    """Callable readiness check; raises NotReady. Builds its requests once, on first use."""

    def __init__(self, probe: dict):
        self.conf = probe
        self.requests: list[Request] | None = None
        self.note = ""  # e.g. "no onnx models in store: health endpoint only"
        self.unavailable: dict[str, str] = {}  # model -> why the server could not load it

    def _build(self) -> list[Request]:
        kind, url = self.conf["kind"], self.conf["url"].rstrip("/")
        if kind == "http":
            return [Request("health", None, url, None, None)]
        if kind not in HEALTH_PATH:
            raise ValueError(f"unknown probe kind {kind!r}")
        reqs = _model_requests(kind, url, self.conf["format"], Path(self.conf["store"]),
                               self.conf.get("models", ""))
        if not reqs:
            self.note = f"no {self.conf['format']} models passed parity in the store: health only"
            reqs = [Request("health", None, url + HEALTH_PATH[kind], None, None,
                            any_status=kind in HEALTH_ANY_STATUS)]
        return reqs

    def _torchserve_workers(self, timeout: float) -> None:
        try:
            from services.torchserve import wait_until_ready
        except ImportError:
            return  # the prediction below is the real test anyway
        models = [r.model for r in self.requests if r.model]
        if not models:
            return
        try:
            wait_until_ready(self.conf["management_url"], models, timeout=timeout)
        except TimeoutError as e:
            raise NotReady(f"workers: {e}") from None

    def __call__(self, timeout: float = 30.0) -> None:
        if self.requests is None:
            self.requests = self._build()
        if self.conf["kind"] == "torchserve" and self.conf.get("management_url"):
            self._torchserve_workers(min(timeout, 2.0))
        for req in self.requests:
            try:
                _http(req, timeout)
            except ModelUnavailable as e:
                self.unavailable[req.model or req.what] = str(e)
            else:
                self.unavailable.pop(req.model or req.what, None)
        if self.unavailable:
            self.note = "unavailable (failed to load): " + "; ".join(f"{m}: {why}" for m, why in self.unavailable.items())


def main(argv: list[str] | None = None) -> int:
    from services.settings import get_settings
    from services.supervisor.spec import default_specs

    ap = argparse.ArgumentParser(prog="python -m services.supervisor.probe",
                                 description="Real-inference readiness check of one service.")
    ap.add_argument("service")
    ap.add_argument("--host", help="probe this host instead of the one in the settings")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args(argv)
    specs = {s.name: s for s in default_specs(get_settings(), Path("/tmp"))}
    if args.service not in specs:
        ap.error(f"unknown service {args.service!r}; known: {', '.join(specs)}")
    conf = dict(specs[args.service].probe)
    if args.host:
        scheme, _, rest = conf["url"].partition("://")
        hostport, slash, path = rest.partition("/")
        port = hostport.rsplit(":", 1)[1]
        conf["url"] = f"{scheme}://{args.host}:{port}{slash}{path}"
    try:
        Probe(conf)(args.timeout)
    except NotReady as e:
        print(f"{args.service} not ready: {e}", file=sys.stderr)
        return 1
    print(f"{args.service} ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())

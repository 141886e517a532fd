"""TorchServe: POST /predictions/<model> with an OIP JSON body (InferRequest.to_oip(binary=False):
the received JSON as is, binary tensors re-encoded as JSON by the codec). Our handler decodes it
with the same codec and answers OIP JSON honouring `outputs`, `id` and model_version, but never
binary tensors (TorchServe has no binary extension): when the client asked for binary outputs the
gateway re-encodes the answer. Readiness comes from the management API (workers READY) or, failing
that, a real inference, because /ping says Healthy before the workers have loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from contract.codec import InferRequest
from contract.manifest import Manifest
from services.gateway.backends.base import Answer, Backend, Call, error_message, request_headers
from services.gateway.errors import BackendLost, BackendUnavailable, GatewayError

WORKER_DIED = 507  # TorchServe's answer when the worker running the request dies


class TorchServeBackend(Backend):
    live_path = "/ping"

    def __init__(self, *args: Any, management_url: str, **kwargs: Any) -> None:
        """management_url: "" when the management API is out of reach (KServe: loopback in each
        predictor's pod); readiness is then a real inference."""
        super().__init__(*args, **kwargs)
        self.management = self._pool(management_url) if management_url else None

    async def close(self) -> None:
        await super().close()
        if self.management is not None:
            await self.management.close()

    async def infer(self, call: Call) -> Answer:
        pool, name = self.route(call.model.name)
        body, _ = call.req.to_oip(binary=False)
        status, h, data = await self._send("POST", f"/predictions/{name}", body,
                                           request_headers(call), pool=pool)
        if status == WORKER_DIED:  # the worker was lost mid-request: retry-safe, like a reset
            raise BackendLost(f"backend {self.runtime}: {error_message(data)} (TorchServe "
                              f"{WORKER_DIED}: the worker process was lost)", runtime=self.runtime)
        self.check(status, h, data, call.model.name)
        return Answer(self.served_by(h), body=data, binary_ok=False)

    async def metadata(self, model: Manifest) -> Any:
        if self.management is None:
            raise BackendUnavailable(f"backend {self.runtime}: TorchServe's management API is "
                                     "not reachable from the gateway", runtime=self.runtime)
        return await self._get_json(f"/models/{model.name}", self.management)

    async def ready(self, model: Manifest) -> bool:
        if self.management is None:
            return await self._probe_inference(model)
        try:
            described = await self.metadata(model)
            return any(
                w.get("status") == "READY" for d in described for w in d.get("workers") or []
            )
        except (GatewayError, orjson.JSONDecodeError, AttributeError, TypeError):
            return await self._probe_inference(model)  # management API closed or tokened

    async def _probe_inference(self, model: Manifest) -> bool:
        arrays = {}
        for s in model.signature.inputs:
            low = s.value_range[0] if s.value_range else 0
            fill = 1 if s.role == "mask" else low
            arrays[s.name] = np.full([1, *(max(d, 1) for d in s.shape[1:])], fill, s.numpy_dtype)
        body, _ = InferRequest.from_arrays(arrays).to_oip()
        pool, name = self.route(model.name)
        status, _, _ = await self._send("POST", f"/predictions/{name}", body,
                                        {"Content-Type": "application/json"},
                                        timeout=self.ready_timeout, pool=pool)
        return status == 200

"""TorchServe: POST /predictions/<model> with the OIP-JSON wire format of our handler
(docs/contracts.md). JSON requests go as they came; TorchServe takes no binary tensors, so binary
inputs are re-encoded as JSON. Readiness comes from the management API (workers READY) or,
failing that, a real inference, because /ping says Healthy before the workers have loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from model_store.manifest import Manifest
from services.gateway.backends.base import Backend, request_headers
from services.gateway.errors import GatewayError
from services.gateway.payload import (
    InferRequest,
    InferResponse,
    decode_oip_response,
    oip_json_request,
)


class TorchServeBackend(Backend):
    live_path = "/ping"

    def __init__(self, *args: Any, management_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.management = self._pool(management_url)

    async def close(self) -> None:
        await super().close()
        self.management.close()

    async def infer(self, req: InferRequest) -> InferResponse:
        if req.body is not None and req.header_length is None:
            body = req.body  # OIP JSON as it came: the handler reads "inputs" and ignores the rest
        else:
            body = oip_json_request(req.arrays())
        path = f"/predictions/{req.model.name}"
        status, h, data = await self._send("POST", path, body, request_headers(req))
        self.check(status, h, data)
        if req.body is not None and not req.binary_outputs():
            return InferResponse(self.served_by(h), body=data)
        arrays = decode_oip_response(data, None, req.model, self.runtime)
        return InferResponse(self.served_by(h), arrays=arrays)

    async def metadata(self, model: Manifest) -> Any:
        return await self._get_json(f"/models/{model.name}", self.management)

    async def ready(self, model: Manifest) -> bool:
        try:
            described = await self.metadata(model)
            return any(
                w.get("status") == "READY" for d in described for w in d.get("workers") or []
            )
        except (GatewayError, orjson.JSONDecodeError, AttributeError, TypeError):
            return await self._probe_inference(model)  # management API closed or tokened

    async def _probe_inference(self, model: Manifest) -> bool:
        arrays = {
            s.name: np.zeros([1, *(max(d, 1) for d in s.shape[1:])], dtype=s.numpy_dtype)
            for s in model.signature.inputs
        }
        body = oip_json_request(arrays)
        path = f"/predictions/{model.name}"
        status, _, _ = await self._send("POST", path, body, {"Content-Type": "application/json"},
                                        timeout=self.probe_timeout)
        return status == 200

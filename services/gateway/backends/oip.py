"""Open Inference Protocol v2 REST backends: our ONNX Runtime and TFLite servers.

An OIP request is forwarded byte for byte (binary tensor extension included) and the answer is
returned as it came; only requests arriving through the TF Serving API are re-encoded.
"""

from __future__ import annotations

from typing import Any

from model_store.manifest import Manifest
from services.gateway.backends.base import Backend, request_headers
from services.gateway.payload import (
    InferRequest,
    InferResponse,
    decode_oip_response,
    oip_json_request,
)


class OIPBackend(Backend):
    live_path = "/v2/health/live"

    async def infer(self, req: InferRequest) -> InferResponse:
        name = req.model.name
        if req.body is not None:
            body = req.body
            if req.header_length is None:
                headers = request_headers(req)
            else:
                headers = request_headers(req, "application/octet-stream")
                headers["Inference-Header-Content-Length"] = str(req.header_length)
        else:
            body, headers = oip_json_request(req.arrays()), request_headers(req)
        status, h, data = await self._send("POST", f"/v2/models/{name}/infer", body, headers)
        self.check(status, h, data)
        hl = h.get("inference-header-content-length")
        header_length = int(hl) if hl else None
        if req.body is not None:
            return InferResponse(self.served_by(h), body=data, header_length=header_length)
        arrays = decode_oip_response(data, header_length, req.model, self.runtime)
        return InferResponse(self.served_by(h), arrays=arrays)

    async def metadata(self, model: Manifest) -> Any:
        return await self._get_json(f"/v2/models/{model.name}")

    async def ready(self, model: Manifest) -> bool:
        path = f"/v2/models/{model.name}/ready"
        status, _, _ = await self._send("GET", path, timeout=self.probe_timeout)
        return status == 200

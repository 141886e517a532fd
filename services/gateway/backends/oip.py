"""Open Inference Protocol v2 REST backends: our ONNX Runtime and TFLite servers.

A received OIP REST body goes out as received (binary tensor extension included: bytes forwarded,
nothing decoded); our servers honour `outputs`, `id`, binary_data and answer with model_version,
so their answer fits the client unchanged. A request that came in another wire form (OIP gRPC,
TF Serving's API) goes as binary tensors asking for binary outputs (base.as_received).
"""

from __future__ import annotations

from typing import Any

from contract.manifest import Manifest
from services.gateway.backends.base import (
    Answer,
    Backend,
    Call,
    as_received,
    request_headers,
    response_header_length,
)


class OIPBackend(Backend):
    live_path = "/v2/health/live"

    async def infer(self, call: Call) -> Answer:
        pool, name = self.route(call.model.name)
        body, header_length = as_received(call.req)
        headers = request_headers(call, header_length)
        status, h, data = await self._send("POST", f"/v2/models/{name}/infer", body, headers,
                                           pool=pool)  # fmt: skip
        self.check(status, h, data, call.model.name)
        by = self.served_by(h)
        return Answer(by, body=data, header_length=response_header_length(h, by))

    async def metadata(self, model: Manifest) -> Any:
        pool, name = self.route(model.name)
        return await self._get_json(f"/v2/models/{name}", pool)

    async def ready(self, model: Manifest) -> bool:
        pool, name = self.route(model.name)
        status, h, body = await self._send("GET", f"/v2/models/{name}/ready",
                                           timeout=self.ready_timeout, pool=pool)  # fmt: skip
        if status == 503:  # failed to load: say why (the repository index shows it)
            self.check(status, h, body, model.name)
        return status == 200

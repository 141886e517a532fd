"""TF Serving REST (the real tensorflow_model_server or our stand-in).

The request goes out as the codec's columnar body {"inputs": {name: nested list}}
(InferRequest.to_tfserving); the answer carries neither datatype nor shape, so
decode_tfserving_outputs casts it to the signature's datatypes and checks the batch size. The
gateway then selects the requested outputs and stamps id and model_version. A request that came
through the TF Serving API is forwarded as received and its answer returned unchanged.
"""

from __future__ import annotations

from typing import Any

import orjson

from contract.codec import CodecError, InferResponse, decode_tfserving_outputs
from contract.manifest import Manifest
from services.gateway.backends.base import Answer, Backend, Call, request_headers
from services.gateway.errors import BackendFailed


class TFServingBackend(Backend):
    live_path = "/v1/models/__gateway_probe__"  # TF Serving has no health route: any answer is life

    async def infer(self, call: Call) -> Answer:
        name = call.model.name
        pool, remote = self.route(name)
        forward = call.tfs_body is not None
        body = call.tfs_body if forward else call.req.to_tfserving(call.model.signature)  # values checked
        status, h, data = await self._send("POST", f"/v1/models/{remote}:predict", body,
                                           request_headers(call), pool=pool)
        self.check(status, h, data, name)
        by = self.served_by(h)
        if forward:
            return Answer(by, tfs_body=data)
        try:
            arrays = decode_tfserving_outputs(data, call.model.signature, call.batch)
        except CodecError as e:
            raise BackendFailed(f"backend {by} sent an unreadable answer: {e.message}",
                                runtime=by) from None
        return Answer(by, response=InferResponse.from_arrays(name, arrays, id=call.req.id))

    async def metadata(self, model: Manifest) -> Any:
        pool, name = self.route(model.name)
        return await self._get_json(f"/v1/models/{name}/metadata", pool)

    async def ready(self, model: Manifest) -> bool:
        pool, name = self.route(model.name)
        status, _, body = await self._send("GET", f"/v1/models/{name}", timeout=self.ready_timeout,
                                           pool=pool)
        if status != 200:
            return False
        versions = orjson.loads(body).get("model_version_status") or []
        return any(v.get("state") == "AVAILABLE" for v in versions)

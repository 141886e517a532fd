"""TF Serving REST (the real tensorflow_model_server or our stand-in).

OIP tensors go out as the columnar {"inputs": {name: nested list}}; the answer has neither dtype
nor shape, so outputs are cast to the manifest's datatypes and reshaped with the request's batch
size. A TF Serving API request is forwarded as it came and its answer returned unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from model_store.manifest import Manifest
from services.gateway.backends.base import Backend, request_headers
from services.gateway.errors import BackendFailed
from services.gateway.payload import InferRequest, InferResponse, cast_outputs


class TFServingBackend(Backend):
    live_path = "/v1/models/__gateway_probe__"  # TF Serving has no health route: any answer is life

    async def infer(self, req: InferRequest) -> InferResponse:
        if req.tfs_body is not None:
            body = req.tfs_body
        else:
            inputs = {k: np.ascontiguousarray(a) for k, a in req.arrays().items()}
            body = orjson.dumps({"inputs": inputs}, option=orjson.OPT_SERIALIZE_NUMPY)
        path = f"/v1/models/{req.model.name}:predict"
        status, h, data = await self._send("POST", path, body, request_headers(req))
        self.check(status, h, data)
        if req.tfs_body is not None:
            return InferResponse(self.served_by(h), tfs_body=data)
        return InferResponse(self.served_by(h), arrays=self._outputs(req, data))

    def _outputs(self, req: InferRequest, data: bytes) -> dict[str, np.ndarray]:
        try:
            outputs = orjson.loads(data)["outputs"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise BackendFailed(
                f"backend {self.runtime} answered without 'outputs': {data[:200]!r}",
                runtime=self.runtime,
            ) from None
        names = [s.name for s in req.model.signature.outputs]
        if len(names) == 1 and not isinstance(outputs, dict):
            outputs = {names[0]: outputs}  # TF Serving unwraps a single output
        if not isinstance(outputs, dict):
            raise BackendFailed(f"backend {self.runtime}: 'outputs' is not keyed by name",
                                runtime=self.runtime)
        return cast_outputs(outputs, req.model, self.runtime, batch=req.batch)

    async def metadata(self, model: Manifest) -> Any:
        return await self._get_json(f"/v1/models/{model.name}/metadata")

    async def ready(self, model: Manifest) -> bool:
        path = f"/v1/models/{model.name}"
        status, _, body = await self._send("GET", path, timeout=self.probe_timeout)
        if status != 200:
            return False
        versions = orjson.loads(body).get("model_version_status") or []
        return any(v.get("state") == "AVAILABLE" for v in versions)

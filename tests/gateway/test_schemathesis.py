"""Schemathesis against the gateway's own OpenAPI (`/openapi.json`), issue 12.

Two gateway processes from tests/gateway/conftest.py over its fake backends: one of its own with
an API key and a 4 KiB payload limit over the shared healthy fakes, and the shared
`broken_gateway` (a refused, a hanging and a 500-ing backend). Every documented operation is
called with generated requests (schemathesis' positive and negative modes); the inference routes
(served by the gateway's outer ASGI layer, not by FastAPI's router) get the store's model names,
pinned and bare, and OIP / TF Serving bodies from valid to broken, some over the payload limit;
each operation is also called once without the key.

Every check runs on every answer and none stops the exploration, so one run reports them all:
- never a 5xx from the healthy gateway; only 502/503/504 (its documented backend outcomes) from
  the broken one;
- the answer conforms to the OpenAPI document: status code documented, content type, schema.

The pytest plugin's lazy `from_fixture` does not work with pytest 9 (schemathesis 4.32.5 reads
`request.node._nodeid`), so the operations are driven through `APIOperation.as_strategy`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway.conftest import GatewayProcess, _ports, backend_env
from contract.codec import InferRequest
from tests.gateway.fakes import MODELS, SIGNATURES, reference_inputs

KEY = "fuzz-key"
PAYLOAD_LIMIT = 4096
EXAMPLES = 20  # per operation (~40 operations x 2 gateways: ~40 s here)
RUNTIMES = ("onnxruntime", "tflite", "tfserving", "torchserve")
MODEL_NAMES = [*MODELS, *(f"{m}@{rt}" for m in MODELS for rt in RUNTIMES), "nope", "tiny-mlp@nope", "@"]
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]
BACKEND_OUTCOMES = {502, 503, 504}  # services/gateway/README.md: refused/circuit open, timeout, backend 5xx


@dataclass
class Exploration:
    failures: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)  # check -> (op, status) -> example
    statuses: dict[str, Counter] = field(default_factory=dict)  # op -> status counts

    def report(self, check: str) -> str:
        return "\n".join(f"{op} -> {status}:\n  {example}"
                         for (op, status), example in sorted(self.failures.get(check, {}).items()))  # fmt: skip


def _tensor(spec, batch: int, seq: int) -> st.SearchStrategy:
    shape = [batch, *(seq if d < 0 else d for d in spec.shape[1:])]
    n = 1
    for d in shape:
        n *= d
    leaf = st.floats(-1e3, 1e3, width=32) if spec.datatype == "FP32" else st.integers(-1, 100)  # ids: [0, 100)
    return st.lists(leaf, min_size=n, max_size=n).map(
        lambda data: {"name": spec.name, "shape": shape, "datatype": spec.datatype, "data": data})


@st.composite
def oip_body(draw, model: str) -> dict:
    """A request for `model` (a store name): valid, or with a broken field; batch 300 is over the
    payload limit."""
    sig = SIGNATURES[model]
    batch, seq = draw(st.sampled_from([1, 2, 3, 300])), draw(st.integers(1, 4))
    doc = {"inputs": [draw(_tensor(s, batch, seq)) for s in sig.inputs]}
    extra = draw(st.fixed_dictionaries({}, optional={
        "id": st.one_of(st.text(max_size=8), st.integers()),
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from([*sig.output_names(), "nope"])}),
                            max_size=2),
        "parameters": st.one_of(st.just({"binary_data_output": False}), st.dictionaries(st.text(max_size=4), st.none())),
    }))  # fmt: skip
    return {**doc, **extra}


def tfserving_body(oip: dict) -> dict:
    """The same tensors as a columnar TF Serving :predict body."""
    return {"inputs": {t["name"]: _nest(t["data"], t["shape"]) for t in oip["inputs"]}}


def _nest(flat: list, shape: list[int]) -> list:
    for d in reversed(shape[1:]):
        flat = [flat[i : i + d] for i in range(0, len(flat), d)]
    return flat


def load_schema(url: str, headers: dict[str, str]):
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers)
    schema.config.update(base_url=url)

    @schema.hook
    def flatmap_path_parameters(ctx, path_parameters):
        if not path_parameters or "model" not in path_parameters:
            return st.just(path_parameters)
        return st.fixed_dictionaries({
            **{k: st.just(v) for k, v in path_parameters.items()},
            "model": st.sampled_from([*MODEL_NAMES, path_parameters["model"]]),
            **({"version": st.sampled_from(["1", "2", path_parameters["version"]])} if "version" in path_parameters else {}),
        })  # fmt: skip

    @schema.hook
    def flatmap_case(ctx, case):
        path = case.operation.path
        if not case.path_parameters or not path.endswith(("/infer", ":predict")):
            return st.just(case)
        model = case.path_parameters.get("model", "").split("@")[0]
        body = oip_body(model if model in SIGNATURES else "tiny-mlp")
        if path.endswith(":predict"):
            body = body.map(tfserving_body)

        def with_body(b):
            case.body = b
            return case

        return st.one_of(st.just(case), body.map(with_body))

    return schema


ROUTABLE = [m for name in ("tiny-mlp", "tiny-pair") for m in (name, *(f"{name}@{rt}" for rt in RUNTIMES))]


def valid_body(model: str, predict: bool, binary_output: bool = False, batch: int = 2) -> dict:
    doc = orjson.loads(InferRequest.from_arrays(reference_inputs(model, batch=batch)).to_oip()[0])
    if binary_output:
        doc["parameters"] = {"binary_data_output": True}
    return tfserving_body(doc) if predict else doc


def sweep(op) -> list:
    """Valid requests for every routable (model, runtime) pair, pinned and bare, JSON and binary
    outputs, and one over the payload limit: what a random walk does not always hit (200s, 413,
    the broken backends' 502/503/504)."""
    if not op.path.endswith(("/infer", ":predict")):
        return []
    predict = op.path.endswith(":predict")
    version = {"version": "1"} if "{version}" in op.path else {}
    cases = [op.Case(path_parameters={"model": m, **version}, media_type="application/json",
                     body=valid_body(m.split("@")[0], predict, binary))
             for m in ROUTABLE for binary in ((False,) if predict else (False, True))]  # fmt: skip
    big = valid_body("tiny-mlp", predict, batch=300)
    return [*cases, op.Case(path_parameters={"model": "tiny-mlp", **version}, media_type="application/json", body=big)]


def explore(url: str, key: str, server_error_check) -> Exploration:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    schema = load_schema(url, headers)
    checks = [server_error_check, *CONFORMANCE]
    found = Exploration({c.__name__: {} for c in checks})

    def call_and_check(op, case, sent: dict[str, str]) -> None:
        response = case.call(headers=sent, timeout=15)
        found.statuses[op.label][response.status_code] += 1
        for check in checks:
            try:
                case.validate_response(response, checks=[check], headers=sent)
            except (AssertionError, BaseExceptionGroup) as e:  # schemathesis raises a FailureGroup
                titles = "; ".join(getattr(f, "title", str(f)) for f in getattr(e, "exceptions", [e]))
                found.failures[check.__name__].setdefault((op.label, response.status_code), (
                    f"{case.as_curl_command(sent)}\n  -> {response.status_code} "
                    f"{response.headers.get('content-type')} {response.content[:160]!r}\n  {titles}"))

    for result in schema.get_all_operations():
        op = result.ok()
        found.statuses[op.label] = Counter()
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))
        calls = [headers, {}] if key else [headers]  # the first case also without the key: 401

        @given(cases)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case):
            while calls:
                call_and_check(op, case, calls.pop())
            call_and_check(op, case, headers)

        run()
        for case in sweep(op):
            call_and_check(op, case, headers)
    return found


def only_backend_outcomes(ctx, response, case):
    """The broken gateway's 5xx are the documented backend outcomes, never its own 500."""
    if response.status_code >= 500 and response.status_code not in BACKEND_OUTCOMES:
        raise AssertionError(f"{response.status_code}: {response.text[:200]}")
    return None


@pytest.fixture(scope="module")
def fuzz_gateway(store, fakes, tmp_path_factory):
    env = backend_env(store, *_ports(fakes), gateway_max_payload_bytes=str(PAYLOAD_LIMIT))
    g = GatewayProcess(env, tmp_path_factory.mktemp("gw") / "gateway.log", api_key=KEY)
    g.wait_ready()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def healthy(fuzz_gateway) -> Exploration:
    return explore(fuzz_gateway.url, KEY, not_a_server_error)


@pytest.fixture(scope="module")
def broken(broken_gateway) -> Exploration:
    g, _ = broken_gateway
    return explore(g.url, "", only_backend_outcomes)


def test_the_gateway_never_answers_5xx(healthy):
    assert not healthy.failures["not_a_server_error"], healthy.report("not_a_server_error")


def test_broken_backends_give_only_502_503_504(broken):
    assert not broken.failures["only_backend_outcomes"], broken.report("only_backend_outcomes")
    seen = set().union(*broken.statuses.values())
    assert BACKEND_OUTCOMES <= seen, f"the exploration never met a broken backend: {sorted(seen)}"


def test_the_inference_routes_are_exercised(healthy):
    """Generated requests reach the backends (200) and the validation (400), over the limit (413),
    unknown models (404) and the key check (401): the exploration is not all 404s."""
    infer = [op for op in healthy.statuses if op.endswith(("/infer", ":predict"))]
    assert len(infer) == 4, infer
    for op in infer:
        assert {200, 400, 401, 404, 413} <= set(healthy.statuses[op]), (op, healthy.statuses[op])


@pytest.mark.parametrize("gateway", ["healthy", "broken"])
@pytest.mark.parametrize("check", [
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
])  # fmt: skip
def test_answers_conform_to_the_openapi(request, gateway, check):
    found: Exploration = request.getfixturevalue(gateway)
    assert not found.failures[check], found.report(check)

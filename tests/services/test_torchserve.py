"""TorchServe runtime: the handler in process, one TorchServe instance per store (tiny / real)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from contract.manifest import Manifest, Signature, Source, TensorSpec, load_manifest, load_store
from services.settings import REPO_ROOT
from services.torchserve import handler as ts_handler
from services.torchserve import wait_until_ready
from services.torchserve.readiness import list_models
from tests.conftest import free_port, python_env, stop_process_group
from tests.services import tiny_models as tm

HANDLER = REPO_ROOT / "services" / "torchserve" / "handler.py"
ARCHIVER = Path(sys.executable).with_name("torch-model-archiver")
TOL = 1e-4


def oip(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                        "data": x.ravel().tolist()}]}  # fmt: skip


def output(body: dict) -> np.ndarray:
    (out,) = body["outputs"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


# --- a tiny store: one TorchScript and one ONNX model, archived with the real handler ------------


def _pack_contract(src: Path) -> Path:
    """What the exporter puts into the .mar next to manifest.json: the contract package (the
    handler imports its codec from there). Returns the dir whose contents go into the archive."""
    pkg = src / "mar-extra"
    (pkg / "contract").mkdir(parents=True)
    for f in ("__init__.py", "datatypes.py", "codec.py", "manifest.py"):
        shutil.copy(REPO_ROOT / "contract" / f, pkg / "contract" / f)
    shutil.copytree(pkg / "contract", src / "contract")  # the unpacked .mar, for run_in_process
    return pkg


def _seq_model(work: Path, name: str, fmt: str) -> Path:
    """The two-input (FP32 features + INT64 ids), two-output sequence model."""
    src = work / name
    if fmt == "pt":
        tm.export_torchscript(src / "model.pt")
    else:
        tm.export_onnx(src / "model.onnx")
    Manifest(name=name, signature=tm.SEQ_SIGNATURE,
             source=Source(framework="pytorch", framework_version="test", architecture="seq",
                           weights="random-init")).save(src)  # fmt: skip
    return src


def _tiny_model(work: Path, name: str, fmt: str) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.eval()
    src = work / name
    src.mkdir(parents=True)
    example = torch.randn(2, 4)
    if fmt == "pt":
        torch.jit.trace(model, example).save(str(src / "model.pt"))
    else:
        torch.onnx.export(
            model, (example,), str(src / "model.onnx"), input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "b"}, "logits": {0: "b"}},
            dynamo=False,
        )  # fmt: skip
    x = np.random.RandomState(1).randn(32, 4).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    Manifest(
        name=name,
        source=Source(framework="pytorch", framework_version=torch.__version__,
                      architecture="mlp", weights="random-init"),  # fmt: skip
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
            outputs=[TensorSpec(name="logits", datatype="FP32", shape=[-1, 3])],
        ),
    ).save(src)
    np.save(src / "inputs.npy", x)
    np.save(src / "outputs.npy", y)
    return src


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("ts_tiny")
    mar_dir = work / "store" / "torchserve"
    mar_dir.mkdir(parents=True)
    models = {}
    for name, fmt in (("tiny-torch", "pt"), ("tiny-onnx", "onnx"), ("tiny-seq", "pt"),
                      ("tiny-seq-onnx", "onnx")):  # fmt: skip
        build = _seq_model if name.startswith("tiny-seq") else _tiny_model
        src = build(work / "src", name, fmt)
        extra = _pack_contract(src)
        subprocess.run(
            [str(ARCHIVER), "--model-name", name, "--version", "1",
             "--serialized-file", str(src / f"model.{fmt}"), "--handler", str(HANDLER),
             "--extra-files", f"{src / 'manifest.json'},{extra}", "--export-path", str(mar_dir)],
            check=True,
        )  # fmt: skip
        models[name] = src
    return {"store": work / "store", "models": models}


# --- the handler in process (the exporters' parity path) -----------------------------------------


@pytest.mark.parametrize("name", ["tiny-torch", "tiny-onnx"])
def test_run_in_process_matches_source(tiny, name):
    src = tiny["models"][name]
    x, y = np.load(src / "inputs.npy"), np.load(src / "outputs.npy")
    r32, r1 = ts_handler.run_in_process(str(src), [oip(x), oip(x[:1])])
    assert r32["model_name"] == name and r32["outputs"][0]["name"] == "logits"
    assert r32["outputs"][0]["datatype"] == "FP32" and r32["outputs"][0]["shape"] == [32, 3]
    np.testing.assert_allclose(output(r32), y, atol=TOL)
    np.testing.assert_allclose(output(r1), y[:1], atol=TOL)


def test_the_exporters_runner_leaves_the_process_as_it_found_it(tiny, tmp_path, monkeypatch):
    """Certifying a .mar in process (exporters/targets/torchserve.py) must not leave the unpacked
    .mar first on sys.path (processes spawned later, e.g. `examples --jobs 2` workers, inherit it
    and imported its partial contract copy: no contract.runtimes) nor on disk."""
    from exporters.targets import torchserve

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the runner unpacks
    src = tiny["models"]["tiny-onnx"]
    x, y = np.load(src / "inputs.npy"), np.load(src / "outputs.npy")
    caller_path = list(sys.path)
    run = torchserve.runner(tiny["store"] / "torchserve" / "tiny-onnx.mar", load_manifest(src).signature)
    np.testing.assert_allclose(run({"input": x})["logits"], y, atol=TOL)
    assert sys.path == caller_path
    assert [p.name[:4] for p in tmp_path.iterdir()] == ["mar-"]  # unpacked while in use...
    del run
    assert list(tmp_path.iterdir()) == []  # ...and removed after


def test_run_in_process_takes_the_request_bytes_as_a_client_sends_them(tiny):
    """The exporter's parity check passes the encoded request as it is: the same answer as the
    dict, and a broken body is refused as TorchServe would refuse it."""
    import json

    src = tiny["models"]["tiny-torch"]
    x, y = np.load(src / "inputs.npy"), np.load(src / "outputs.npy")
    as_bytes, broken = json.dumps(oip(x)).encode(), json.dumps(oip(x))[:-5].encode()
    r_dict, r_bytes, r_broken = ts_handler.run_in_process(str(src), [oip(x), as_bytes, broken])
    assert output(r_bytes).tolist() == output(r_dict).tolist()
    np.testing.assert_allclose(output(r_bytes), y, atol=TOL)
    assert r_broken["status"] == 400 and "error" in r_broken


def test_invalid_requests_fail_alone_in_a_batch(tiny):
    src = tiny["models"]["tiny-torch"]
    x, y = np.load(src / "inputs.npy"), np.load(src / "outputs.npy")
    bad = {
        "name": oip(x[:2], name="x"),
        "datatype": oip(x[:2], datatype="FP64"),
        "rank": {"inputs": [{"name": "input", "shape": [8], "datatype": "FP32", "data": [0] * 8}]},
        "dim": {"inputs": [{"name": "input", "shape": [2, 5], "datatype": "FP32",
                            "data": [0] * 10}]},
        "count": {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                              "data": [0] * 7}]},
        "data": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                             "data": ["a", "b", "c", "d"]}]},  # fmt: skip
        "envelope": {"instances": [[0, 0, 0, 0]]},
    }
    bodies = [oip(x[:3]), *bad.values(), oip(x[3:5])]
    results = ts_handler.run_in_process(str(src), bodies)
    np.testing.assert_allclose(output(results[0]), y[:3], atol=TOL)
    np.testing.assert_allclose(output(results[-1]), y[3:5], atol=TOL)
    for (what, _), r in zip(bad.items(), results[1:-1]):
        assert r["status"] == 400 and r["error"], what
    assert "'x'" in results[1]["error"] and "FP64" in results[2]["error"]


def test_handler_accepts_raw_body_encodings(tiny):
    src = tiny["models"]["tiny-onnx"]
    x = np.load(src / "inputs.npy")[:2]
    ctx = ts_handler._fake_context(str(src), "model.onnx")
    h = ts_handler.TensorHandler()
    h.initialize(ctx)
    raw = json.dumps(oip(x))
    requests = [{"body": raw.encode()}, {"data": bytearray(raw.encode())}, {"body": oip(x)},
                {"body": b"{not json"}]  # fmt: skip
    out = [json.loads(r) for r in h.handle(requests, ctx)]
    assert out[0] == out[1] == out[2] and out[0]["outputs"][0]["shape"] == [2, 3]
    assert "not valid JSON" in out[3]["error"] and ctx.statuses == {3: (400, "Bad Request")}


def test_handler_imports_nothing_from_the_repo():
    text = HANDLER.read_text()
    assert "from services" not in text and "from model_store" not in text
    assert "from contract import codec" in text  # the .mar's copy


def _seq_body(x: dict[str, np.ndarray], **extra) -> dict:
    return {"inputs": [{"name": "features", "shape": list(x["features"].shape), "datatype": "FP32",
                        "data": x["features"].ravel().tolist()},
                       {"name": "ids", "shape": list(x["ids"].shape), "datatype": "INT64",
                        "data": x["ids"].ravel().tolist()}], **extra}  # fmt: skip


def _outputs(body: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]}


@pytest.mark.parametrize("name", ["tiny-seq", "tiny-seq-onnx"])
def test_two_inputs_tuple_outputs_in_one_batch(tiny, name):
    """One TorchServe batch mixing sequence lengths 7 and 16 (grouped, never concatenated), an
    outputs filter, an id, and an invalid request that fails alone."""
    full = tm.seq_inputs()
    x7 = {k: v[:2, :7] for k, v in full.items()}
    x16 = {k: v[2:5] for k, v in full.items()}
    x7b = {k: v[5:6, :7] for k, v in full.items()}
    bad = _seq_body(x7)
    bad["inputs"][1]["datatype"] = "FP32"
    bodies = [_seq_body(x7, id="a"), _seq_body(x16, outputs=[{"name": "scores"}]), bad,
              _seq_body(x7b), {"inputs": bad["inputs"][:1]}]  # fmt: skip
    r7, r16, r_bad, r7b, r_missing = ts_handler.run_in_process(str(tiny["models"][name]), bodies)
    assert (r7["model_name"], r7["model_version"], r7["id"]) == (name, "1", "a")
    assert [(o["name"], o["datatype"], o["shape"]) for o in r7["outputs"]] == [
        ("pooled", "FP32", [2, tm.WIDTH]), ("scores", "FP32", [2, 7])]
    for got, x in ((r7, x7), (r16, x16), (r7b, x7b)):
        want = tm.seq_outputs(x)
        for k, v in _outputs(got).items():
            np.testing.assert_allclose(v, want[k], atol=TOL, err_msg=k)
    assert [o["name"] for o in r16["outputs"]] == ["scores"] and "id" not in r16
    assert r_bad["status"] == 400 and "'ids'" in r_bad["error"] and "FP32" in r_bad["error"]
    assert r_missing["status"] == 400 and "missing" in r_missing["error"]


def test_non_finite_outputs_are_null(tiny):
    x = {"features": np.full((1, 2, tm.WIDTH), 3e38, np.float32), "ids": np.zeros((1, 2), np.int64)}
    (r,) = ts_handler.run_in_process(str(tiny["models"]["tiny-seq"]), [_seq_body(x)])
    assert None in r["outputs"][1]["data"], r


def test_large_requests_run_in_slices(tiny, monkeypatch):
    """A batch above RUN_MAX_BATCH runs in slices (bounded working memory); the answer is the
    whole batch's, rows in order."""
    x = tm.seq_inputs(batch=7, seed=3)
    calls = []
    original = ts_handler.TensorHandler._run_group

    def spy(self, requests):
        run = self._run
        self._run = lambda arrays: calls.append(len(arrays[0])) or run(arrays)
        try:
            return original(self, requests)
        finally:
            self._run = run

    monkeypatch.setattr(ts_handler.TensorHandler, "_run_group", spy)
    monkeypatch.setenv("RUN_MAX_BATCH", "3")
    (r,) = ts_handler.run_in_process(str(tiny["models"]["tiny-seq"]), [_seq_body(x)])
    assert calls == [3, 3, 1]
    np.testing.assert_allclose(_outputs(r)["pooled"], tm.seq_outputs(x)["pooled"], atol=TOL)


def test_handler_runs_with_only_the_mar_files(tiny, tmp_path):
    """Outside the repository (no PYTHONPATH, another cwd): the handler imports the .mar's copy
    of the contract package."""
    src = tiny["models"]["tiny-seq"]
    x = {k: v[:1, :3] for k, v in tm.seq_inputs().items()}
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import handler; "
        "r = handler.run_in_process(sys.argv[2], [json.loads(sys.argv[3])]); import contract; "
        "print(json.dumps([contract.__file__, r]))"
    )  # fmt: skip
    env = python_env()
    env.pop("PYTHONPATH")
    done = subprocess.run([sys.executable, "-c", script, str(HANDLER.parent), str(src),
                           json.dumps(_seq_body(x))], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    where, (reply,) = json.loads(done.stdout.splitlines()[-1])
    assert where == str(src / "contract" / "__init__.py")
    np.testing.assert_allclose(_outputs(reply)["pooled"], tm.seq_outputs(x)["pooled"], atol=TOL)


# --- the launcher's configuration -----------------------------------------------------------------


def _launcher(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.torchserve", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _props(text: str) -> dict[str, str]:
    return dict(l.split("=", 1) for l in text.splitlines() if l and not l.startswith("#"))


def test_config_in_container_opens_inference_only(tiny):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_BIND_HOST": "0.0.0.0",
           "TORCHSERVE_MODEL_TINY_ONNX_WORKERS": "2"}  # fmt: skip
    p = _launcher("--model-store", str(tiny["store"]), "--print-config", env=env)
    assert p.returncode == 0, p.stderr
    props = _props(p.stdout)
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["metrics_address"] == "http://127.0.0.1:8082"
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_model_api"] == "false"
    models = json.loads(props["models"])
    assert models["tiny-onnx"]["1"]["minWorkers"] == models["tiny-onnx"]["1"]["maxWorkers"] == 2
    assert models["tiny-torch"]["1"]["marName"] == "tiny-torch.mar"


def test_config_registers_only_the_models_asked_for(tiny):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    p = _launcher("--model-store", str(tiny["store"]), "--print-config",
                  "--models", "tiny-seq, tiny-torch", env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    props = _props(p.stdout)
    assert props["load_models"] == "tiny-seq=tiny-seq.mar,tiny-torch=tiny-torch.mar"
    assert sorted(json.loads(props["models"])) == ["tiny-seq", "tiny-torch"]
    p = _launcher("--model-store", str(tiny["store"]), "--print-config", env=env)
    assert _props(p.stdout)["load_models"] == "all"  # the default: every .mar


def test_unknown_model_is_refused_in_one_line(tiny):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "STACK_MODELS": "tiny-torch,nope"}
    p = _launcher("--model-store", str(tiny["store"]), "--print-config", env=env)
    assert p.returncode == 1 and p.stdout == ""
    mar_dir = (tiny["store"] / "torchserve").resolve()
    assert p.stderr.strip() == (
        f"python -m services.torchserve: --models: no model nope among the .mar files of "
        f"{mar_dir}; available: tiny-onnx, tiny-seq, tiny-seq-onnx, tiny-torch"
    )


# --- one TorchServe instance on the tiny store ----------------------------------------------------


class Server:
    def __init__(self, store: Path, run_dir: Path, env: dict[str, str] | None = None):
        self.ports = {k: free_port() for k in ("inference", "management", "metrics",
                                               "grpc-inference", "grpc-management")}  # fmt: skip
        self.run_dir = run_dir
        self.log = open(run_dir.parent / f"{run_dir.name}.out", "w")
        args = [f"--{k}-port={v}" for k, v in self.ports.items()]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.torchserve", *args,
             "--model-store", str(store), "--run-dir", str(run_dir)],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.ports['inference']}"
        self.management = f"http://127.0.0.1:{self.ports['management']}"
        self.started = time.monotonic()
        try:
            wait_until_ready(self.management, None, timeout=120)
        except TimeoutError:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - self.started

    def stop(self) -> list[psutil.Process]:
        """Stop the process group; returns the processes (Java + workers) still alive after."""
        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        except psutil.NoSuchProcess:
            family = []
        stop_process_group(self.proc)
        self.log.close()
        _, alive = psutil.wait_procs(family, timeout=10)
        return alive


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    # tiny-torch batches up to 4 requests so a batch can mix valid and invalid requests.
    env = {"TORCHSERVE_MODEL_TINY_TORCH_BATCH_SIZE": "4",
           "TORCHSERVE_MODEL_TINY_TORCH_MAX_BATCH_DELAY_MS": "200",
           "TORCHSERVE_MODEL_TINY_SEQ_BATCH_SIZE": "4",
           "TORCHSERVE_MODEL_TINY_SEQ_MAX_BATCH_DELAY_MS": "200"}  # fmt: skip
    s = Server(tiny["store"], tmp_path_factory.mktemp("ts_run") / "run", env)
    yield s
    assert s.stop() == [], "TorchServe left processes behind"


def test_server_with_one_model(tiny, tmp_path):
    """As under KServe: the whole store mounted, one model registered (STACK_MODELS here)."""
    s = Server(tiny["store"], tmp_path / "run", {"STACK_MODELS": "tiny-onnx"})
    try:
        assert list_models(s.management) == ["tiny-onnx"]
        x = np.load(tiny["models"]["tiny-onnx"] / "inputs.npy")[:2]
        r = httpx.post(f"{s.url}/predictions/tiny-onnx", json=oip(x), timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.post(f"{s.url}/predictions/tiny-torch", json=oip(x)).status_code == 404
    finally:
        assert s.stop() == [], "TorchServe left processes behind"


@pytest.mark.parametrize("name", ["tiny-torch", "tiny-onnx"])
@pytest.mark.parametrize("batch", [1, 32])
def test_server_predicts_like_the_source(server, tiny, name, batch):
    src = tiny["models"][name]
    x, y = np.load(src / "inputs.npy")[:batch], np.load(src / "outputs.npy")[:batch]
    r = httpx.post(f"{server.url}/predictions/{name}", json=oip(x), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == name
    assert body["outputs"][0]["datatype"] == "FP32" and body["outputs"][0]["shape"] == [batch, 3]
    np.testing.assert_allclose(output(body), y, atol=TOL)


def test_server_bad_requests_get_400_alone(server, tiny):
    x = np.load(tiny["models"]["tiny-torch"] / "inputs.npy")
    y = np.load(tiny["models"]["tiny-torch"] / "outputs.npy")
    bodies = [json.dumps(oip(x[:2])), json.dumps(oip(x[:2], name="nope")),
              json.dumps(oip(x[2:4])), "{not json"]  # fmt: skip

    def post(body: str) -> httpx.Response:
        return httpx.post(f"{server.url}/predictions/tiny-torch", content=body, timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip

    with ThreadPoolExecutor(4) as ex:
        ok1, bad1, ok2, bad2 = ex.map(post, bodies)
    np.testing.assert_allclose(output(ok1.json()), y[:2], atol=TOL)
    np.testing.assert_allclose(output(ok2.json()), y[2:4], atol=TOL)
    assert bad1.status_code == 400 and "nope" in bad1.json()["error"]
    assert bad2.status_code == 400 and "JSON" in bad2.json()["error"]


def test_server_two_inputs_mixed_sequence_lengths(server):
    """Concurrent requests of sequence lengths 7 and 16 (TorchServe may batch them together: the
    handler groups them by shape) each get their own answer."""
    full = tm.seq_inputs()
    xs = [{k: v[i : i + 1, : (7 if i % 2 else 16)] for k, v in full.items()} for i in range(4)]

    def post(x):
        return httpx.post(f"{server.url}/predictions/tiny-seq", json=_seq_body(x), timeout=30)

    with ThreadPoolExecutor(4) as ex:
        replies = list(ex.map(post, xs))
    for x, r in zip(xs, replies):
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == "1"
        np.testing.assert_allclose(_outputs(r.json())["scores"], tm.seq_outputs(x)["scores"], atol=TOL)


def test_server_unknown_model_is_404(server):
    r = httpx.post(f"{server.url}/predictions/nope", json={"inputs": []}, timeout=10)
    assert r.status_code == 404


def test_server_management_and_metrics_on_loopback_only(server):
    props = _props((server.run_dir / "config.properties").read_text())
    assert props["management_address"].startswith("http://127.0.0.1:")
    listening = {
        c.laddr.port: c.laddr.ip
        for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    for port in server.ports.values():
        assert listening[port] in ("127.0.0.1", "::ffff:127.0.0.1"), (port, listening)
    # Token authorization is off and the model API (register/unregister) is disabled.
    assert httpx.get(f"{server.management}/models", timeout=10).status_code == 200
    assert httpx.post(f"{server.management}/models?url=x.mar", timeout=10).status_code == 405


def test_server_logs_and_temp_in_run_dir(server):
    assert (server.run_dir / "logs" / "ts_log.log").is_file()
    assert list((server.run_dir / "tmp").glob(".ts.sock.*"))


def test_wait_until_ready_times_out_on_unknown_model(server):
    with pytest.raises(TimeoutError, match="nope"):
        wait_until_ready(server.management, ["nope"], timeout=0.5)


# --- every model of the real store ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_server(real_store, tmp_path_factory):
    assert list((real_store / "torchserve").glob("*.mar")), f"no .mar files in {real_store / 'torchserve'}"
    s = Server(real_store, tmp_path_factory.mktemp("ts_real") / "run")
    yield s
    s.stop()


@pytest.mark.real_store
@pytest.mark.parametrize("batch", [1, 32])
def test_real_store_models(real_server, real_store, batch):
    manifests = {n: m for n, m in load_store(real_store).items() if "torchserve" in m.artifacts}
    assert manifests
    for name, m in manifests.items():
        x, y, _ = m.load_reference(real_store)
        body = {"inputs": [{"name": s.name, "shape": list(x[s.name][:batch].shape),
                            "datatype": s.datatype, "data": x[s.name][:batch].ravel().tolist()}
                           for s in m.signature.inputs]}  # fmt: skip
        r = httpx.post(f"{real_server.url}/predictions/{name}", json=body, timeout=120)
        assert r.status_code == 200, (name, r.text[:500])
        got = _outputs(r.json())
        assert list(got) == m.signature.output_names()
        for k, want in y.items():
            np.testing.assert_allclose(got[k], want[:batch], atol=TOL, err_msg=f"{name} {k}")


def test_archiver_is_installed():
    assert ARCHIVER.exists() and shutil.which("java"), "torch-model-archiver and java are needed"

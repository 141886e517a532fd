"""The whole local topology (`make up`): five supervised services on the real example store."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time

import httpx
import numpy as np
import psutil
import pytest

from contract.codec import InferRequest, InferResponse
from contract.manifest import load_store

pytestmark = pytest.mark.real_stack
SERVICES = {"onnxruntime", "tflite", "tfserving", "torchserve", "aotinductor", "executorch", "gateway"}


def state(stack) -> dict:
    return json.loads((stack["run_dir"] / "state.json").read_text())


def test_up_brings_every_service_up_with_startup_and_rss(real_stack):
    services = state(real_stack)["services"]
    assert set(services) == SERVICES
    for name, s in services.items():
        assert s["status"] == "ready", name
        assert s["startup_s"] > 0 and s["rss_bytes"] > 0, name
    for name in SERVICES:
        assert name in real_stack["up_output"]  # the table of what serves where


def test_supervisor_restarts_a_killed_runtime(real_stack):
    before = state(real_stack)["services"]["onnxruntime"]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = state(real_stack)["services"]["onnxruntime"]
        if now["pid"] != before["pid"] and now["status"] == "ready":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"onnxruntime was not restarted: {now}")
    assert now["restarts"] >= before.get("restarts", 0) + 1
    m = load_store(real_stack["store"])["digits-cnn-torch"]
    x, y, _ = m.load_reference(real_stack["store"])
    body, _ = InferRequest.from_arrays({k: v[:1] for k, v in x.items()}).to_oip()
    r = httpx.post(f"{real_stack['runtimes']['onnxruntime']}/v2/models/{m.name}/infer", content=body, timeout=30)
    assert r.status_code == 200
    got = InferResponse.from_oip(r.content).arrays()
    for name, ref in y.items():
        np.testing.assert_allclose(got[name], ref[:1], atol=1e-4)


def test_torchserve_management_api_is_loopback_only(real_stack):
    mgmt_port = int(real_stack["env"]["TORCHSERVE_MANAGEMENT_PORT"])
    listeners = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == mgmt_port]
    assert listeners
    for c in listeners:  # Java reports IPv4 loopback as the mapped address ::ffff:127.0.0.1
        ip = ipaddress.ip_address(c.laddr.ip)
        assert (getattr(ip, "ipv4_mapped", None) or ip).is_loopback, c.laddr

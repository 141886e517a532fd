import json
import os
import time

from loadtests import monitor
from services.settings import StackSettings


def test_state_file_is_read_defensively(tmp_path):
    path = tmp_path / "state.json"
    assert monitor.read_state(path) == {}
    path.write_text("{not json")
    assert monitor.read_state(path) == {}
    path.write_text(json.dumps({
        "supervisor": {"pid": 1},
        "services": {
            "gateway": {"pid": os.getpid(), "tree": [[os.getpid(), 0.0], [999999999, 1.0]],
                        "startup_s": 1.5},
            "tfserving": {"pid": None, "spawned_at": 10.0, "ready_at": 14.5},
            "broken": "x",
        },
    }))
    state = monitor.read_state(path)
    assert state["gateway"] == {"pids": {os.getpid(), 999999999}, "startup_s": 1.5}
    assert state["tfserving"] == {"pids": set(), "startup_s": 4.5}
    assert "broken" not in state
    found = monitor.discover_services(StackSettings(gateway_port=1, onnxruntime_port=2,
                                                    tflite_port=3, tfserving_rest_port=4,
                                                    tfserving_grpc_port=5,
                                                    torchserve_inference_port=6,
                                                    torchserve_management_port=7), path)
    assert found["gateway"] == {os.getpid()}  # dead pids dropped


def test_cpu_sampler_attributes_cpu_to_groups():
    sampler = monitor.CpuSampler({"me": {os.getpid()}}, interval=0.1).start()
    t0 = time.time()
    while time.time() - t0 < 0.5:
        sum(i * i for i in range(10000))
    t1 = time.time()
    time.sleep(0.15)
    sampler.stop()
    cpu = sampler.window(t0, t1)
    assert cpu["groups_pct"]["me"] > 20
    assert cpu["busy_pct"] >= cpu["groups_pct"]["me"] - 5
    assert sampler.rss_peak_mb["me"] > 10

"""Stand-ins for a family's serving adapter in the edge worker (loadtests/edge_worker.py, job key
"adapter"), over a tests/loadtests/fakes.py model: they compute its outputs exactly, and can die
or hang on a given call so the round protocol's failure paths can be driven."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tests.loadtests.fakes import compute

# EDGE_FAKE_FAIL="<family>:<call>:<die|hang>": that family's artifacts fail on their call-th predict
FAIL_ENV = "EDGE_FAKE_FAIL"


class FakeModel:
    family = "fake"
    calls = 0  # per process: every artifact of the worker counts

    def __init__(self, manifest, store, settings, key):
        self.dir, self.key = store / manifest.name, key

    @classmethod
    def library_version(cls) -> str:
        return "fake-1"

    def load(self) -> None:
        with np.load(self.dir / "fake.npz") as f:
            self.params = dict(f)

    def warm_up(self) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        type(self).calls += 1
        family, _, rest = os.environ.get(FAIL_ENV, "").partition(":")
        at, _, how = rest.partition(":")
        if family == self.family and type(self).calls == int(at):
            if how == "hang":
                time.sleep(3600)
            print(f"fake {self.family}: dying on call {at} as the test asked", file=sys.stderr, flush=True)
            os._exit(3)
        return compute(self.params, inputs)


class FakeTFLite(FakeModel):
    family = "tflite"


class FakeOnnx(FakeModel):
    family = "onnxruntime"


class FakeExecuTorch(FakeModel):
    family = "executorch"


ADAPTERS = {f: f"tests.loadtests.edge_fakes:{c.__name__}" for f, c in
            (("tflite", FakeTFLite), ("onnxruntime", FakeOnnx), ("executorch", FakeExecuTorch))}

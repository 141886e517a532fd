"""In-process checks of the pieces that decide pass/fail and atomicity."""

from __future__ import annotations

import numpy as np
import pytest

from exporters import parity, pipeline
from exporters.sources import pytorch
from tests.exporters.tiny_models import linear


@pytest.fixture
def source():
    x = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    return pytorch.from_module("tiny", linear(), x, architecture="tiny")


class FakeTarget:
    def __init__(self, outputs):
        self.outputs = outputs

    def runner(self, path):
        return lambda x: {"output_0": self.outputs(x)}


def test_nan_output_fails_parity(monkeypatch, source):
    monkeypatch.setattr(parity, "target", lambda fmt: FakeTarget(lambda x: np.full((len(x), 3), np.nan, np.float32)))
    result = parity.check(source, "tflite", None)
    assert not result.ok and result.max_abs_error == float("inf")


def test_wrong_shape_or_missing_output_fails_parity(monkeypatch, source):
    monkeypatch.setattr(parity, "target", lambda fmt: FakeTarget(lambda x: np.zeros((len(x), 4), np.float32)))
    result = parity.check(source, "onnx", None)
    assert not result.ok and "output 'output_0' at batch 1 is float32[1, 4]" in result.error


def test_exact_runner_passes_with_top1(monkeypatch, source):
    monkeypatch.setattr(parity, "target", lambda fmt: FakeTarget(lambda x: source.predict(x)[0]))
    result = parity.check(source, "onnx", None)
    assert result.ok and result.max_abs_error == 0.0 and result.top1_agreement == 1.0


def test_interrupted_export_leaves_store_untouched(monkeypatch, source, tmp_path):
    store = tmp_path / "store"

    class Boom:
        @staticmethod
        def export(ws, dest):
            (dest / "partial.bin").write_bytes(b"half")
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "target", lambda fmt: Boom)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_model(source, store, ("onnx",))
    assert list(store.iterdir()) == []

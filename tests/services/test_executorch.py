"""The ExecuTorch runtime adapter in-process: load a two-input, two-output .pte from a scratch store,
predict at several batch sizes (above the artifact's batch bound too: run() cuts it), and refuse bad
inputs and a program that does not match its manifest with messages naming the cause."""

from __future__ import annotations

import numpy as np
import pytest

from contract.codec import CodecError
from contract.manifest import load_manifest
from exporters.pipeline import export_model
from exporters.user import load_user_source
from services.executorch.runtime import ExecuTorchModel
from services.settings import StackSettings


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    store = tmp_path_factory.mktemp("et-store")
    src = load_user_source("tests.exporters.tiny_models:two_inputs", "two",
                           inputs=["features:float32:batch,6", "ids:int64:batch,seq"])  # fmt: skip
    _, rows = export_model(src, store, ("executorch",))
    assert rows[0].ok, rows[0].message
    return store, src


def _model(store, threads: int = 1) -> ExecuTorchModel:
    model = ExecuTorchModel(load_manifest(store / "two"), store, StackSettings(runtime_intra_op_threads=threads))
    model.load()
    return model


def _rows(x: dict[str, np.ndarray], n: int, seq: int | None = None) -> dict[str, np.ndarray]:
    out = {k: np.resize(v, (n, *v.shape[1:])) for k, v in x.items()}
    if seq is not None:
        out["ids"] = np.ascontiguousarray(out["ids"][:, :seq])
    return out


@pytest.mark.parametrize("n", [1, 5, 64, 100])
def test_predicts_like_the_source_at_several_batch_sizes(exported, n):
    store, src = exported
    model = _model(store)
    model.warm_up()
    x = _rows(src.reference_inputs, n)
    model.check(x)
    got = model.run(x)  # 100 > the artifact's 64: run() cuts it into runs
    assert list(got) == ["scores", "pooled"]
    for spec, want in zip(src.signature.outputs, src.predict(x)):
        assert got[spec.name].dtype == np.float32 and got[spec.name].shape == want.shape
        np.testing.assert_allclose(got[spec.name], want, atol=1e-4)


def test_a_shorter_sequence_works(exported):
    store, src = exported
    x = _rows(src.reference_inputs, 3, seq=7)
    got = _model(store).run(x)
    np.testing.assert_allclose(got["scores"], src.predict(x)[0], atol=1e-4)


def test_threadpool_follows_the_settings(exported):
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    store, _ = exported
    model = _model(store, threads=2)
    assert _threadpool_get_thread_count() == 2 and "threadpool=2" in model.describe()
    _model(store, threads=1)
    assert _threadpool_get_thread_count() == 1


def test_a_sequence_above_the_planned_bound_is_a_400_naming_it(exported):
    store, src = exported
    model = _model(store)
    seq = src.reference_inputs["ids"].shape[1]
    x = {"features": np.zeros((2, 6), np.float32), "ids": np.zeros((2, seq + 1), np.int64)}
    with pytest.raises(CodecError, match=rf"input 'ids' has seq {seq + 1}; .* at most {seq}"):
        model.check(x)


def test_a_wrong_fixed_dimension_is_a_400_naming_the_input(exported):
    store, _ = exported
    x = {"features": np.zeros((2, 7), np.float32), "ids": np.zeros((2, 4), np.int64)}
    with pytest.raises(CodecError, match="input 'features' has shape \\[2, 7\\]"):
        _model(store).check(x)


def test_a_program_that_does_not_match_its_manifest_fails_to_load(exported, tmp_path):
    store, _ = exported
    manifest = load_manifest(store / "two")
    manifest.signature.inputs[1].datatype = "INT32"  # the program takes int64 ids
    manifest.signature.outputs.pop()  # and returns two outputs
    model = ExecuTorchModel(manifest, store, StackSettings())
    with pytest.raises(ValueError, match="does not match the manifest: the program takes 2 input\\(s\\) and returns 2"):
        model.load()


def test_without_executorch_load_says_how_to_install(exported, monkeypatch):
    import sys

    store, _ = exported
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    model = ExecuTorchModel(load_manifest(store / "two"), store, StackSettings())
    with pytest.raises(RuntimeError, match="executorch is not importable .*pip install --no-deps -r requirements-edge.lock"):
        model.load()

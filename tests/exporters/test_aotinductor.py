"""The AOTInductor route (torch.export -> .pt2 package): parity on the examples at several batch
sizes and sequence lengths, the dynamic-dim ranges it records, the compile cache, the Keras route."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from exporters import inputs as ref_inputs
from exporters.errors import ConversionError, RouteUnavailable
from exporters.pipeline import export_model
from exporters.sources import pytorch
from exporters.targets import aotinductor, routes
from exporters.workspace import Workspace
from tests.conftest import AOTI_EXAMPLES
from tests.exporters.signatures import check_artifacts


def _artifact(manifests, name):
    m = manifests[name]
    assert "aotinductor" in m.artifacts, m.failed.get("aotinductor")
    return m.artifacts["aotinductor"]


@pytest.mark.parametrize("name", AOTI_EXAMPLES)
def test_examples_export_with_a_passing_certificate(aoti_export, name):
    _, manifests, store, _ = aoti_export
    art = _artifact(manifests, name)
    assert art.parity.ok, art.parity.error
    assert art.parity.runtime == "torch._inductor.aoti_load_package"
    assert art.parity.max_abs_error < 1e-4 and art.parity.top1_agreement == 1.0
    assert art.path == "aotinductor/1/model.pt2" and (store / name / art.path).is_file()
    assert art.extra["compile_cache"] == "miss" and float(art.extra["compile_seconds"]) > 1
    assert art.export_seconds >= float(art.extra["compile_seconds"])
    check_artifacts(manifests[name], store)  # the package's own record of the signature


def test_transformer_ranges_come_from_the_model(aoti_export):
    """Both int64 inputs share "sequence"; its range is what the positions table allows (64),
    the batch is unbounded; the certificate covered a second sequence length."""
    _, manifests, _, _ = aoti_export
    art = _artifact(manifests, "digits-transformer-torch")
    ranges = json.loads(art.extra["dim_ranges"])
    assert ranges == {"input_ids": {"batch": [1, None], "sequence": [1, 64]},
                      "attention_mask": {"batch": [1, None], "sequence": [1, 64]}}  # fmt: skip
    assert "dynamic dims at 7" in art.parity.inputs


@pytest.mark.parametrize("name", AOTI_EXAMPLES)
@pytest.mark.parametrize("batch", [1, 3, 17, 32])
def test_package_matches_the_source_at_several_batch_sizes(aoti_export, name, batch):
    srcs, manifests, store, _ = aoti_export
    src = srcs[name]
    run = aotinductor.runner(store / name / _artifact(manifests, name).path, src.signature)
    x = {k: v[:batch] for k, v in src.reference_inputs.items()}
    cases = [x]
    if name == "digits-transformer-torch":  # and other sequence lengths
        cases += [ref_inputs.crop(x, src.signature.inputs, n) for n in (1, 5, 40)]
    for case in cases:
        got = run(case)
        for spec, want in zip(src.signature.outputs, src.predict(case)):
            assert got[spec.name].shape == want.shape and got[spec.name].dtype == want.dtype
            np.testing.assert_allclose(got[spec.name], want, atol=1e-4)


def test_unchanged_model_is_not_recompiled(aoti_export, tmp_path):
    """A second export of the same model (a new store, the same compile cache) copies the cached
    package: no compile, the same bytes, still certified."""
    srcs, manifests, _, cache = aoti_export
    first = _artifact(manifests, "digits-cnn-torch")
    assert (cache / f"{first.extra['cache_key']}.pt2").is_file()
    again = export_model(srcs["digits-cnn-torch"], tmp_path / "store", ("aotinductor",))[0].artifacts["aotinductor"]
    assert again.extra["compile_cache"] == "hit" and again.extra["compile_seconds"] == "0"
    assert again.extra["compile_seconds_when_built"] == first.extra["compile_seconds"]
    assert again.sha256 == first.sha256 and again.extra["cache_key"] == first.extra["cache_key"]
    assert again.parity.ok and again.export_seconds < float(first.extra["compile_seconds"])


def test_changed_weights_change_the_cache_key(aoti_export, tmp_path):
    import io

    import torch

    src = aoti_export[0]["digits-cnn-torch"]

    def key() -> str:
        buf = io.BytesIO()
        torch.export.save(Workspace(src, tmp_path).exported_program, buf)
        return aotinductor.cache_key(buf.getvalue(), aotinductor.metadata(src.signature))

    before = key()
    param = next(src.native.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param[0].add_(1.0)
    try:
        assert key() != before
    finally:
        with torch.no_grad():
            param.copy_(saved)  # bit for bit: the same weights give the same key again
    assert key() == before


def test_a_dim_torch_export_would_fix_is_refused(tmp_path):
    """"n" is declared dynamic but the model only takes 6: a package for n = 6 alone would break
    the manifest's promise, so the route fails naming the dim."""
    import torch

    specs = [ref_inputs.parse_input("x:float32:batch,n")]
    x = {"x": np.random.default_rng(0).random((32, 6), dtype=np.float32)}
    src = pytorch.from_module("fixed", torch.nn.Linear(6, 3), x, architecture="fixed", input_specs=specs)
    with pytest.raises(ConversionError, match=r"fix dynamic dims .*x dim 1 \(n\) to 6"):
        Workspace(src, tmp_path).exported_program


def test_keras_route_says_what_it_needs(monkeypatch, tmp_path):
    """Without onnx2torch the Keras route fails at once with the package to install."""
    import importlib.util

    (route,) = routes("aotinductor", "keras")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnx2torch" else real(n, *a))
    with pytest.raises(RouteUnavailable, match="no route from Keras: needs onnx2torch, not installed"):
        route.export(None, tmp_path)


def test_the_cache_evicts_the_least_recently_used_packages_beyond_its_bound(tmp_path):
    def package(name: str, kb: int, age_s: float):
        p = tmp_path / f"{name}.pt2"
        p.write_bytes(b"x" * kb * 1024)
        p.with_suffix(".json").write_text("{}")
        os.utime(p, (time.time() - age_s,) * 2)
        return p

    old, used, new = package("old", 300, 300), package("used", 300, 200), package("new", 300, 0)
    os.utime(used)  # a cache hit since: now the most recently used but one
    os.utime(new)
    gone = aotinductor.evict(tmp_path, 700 * 1024, keep=new)
    assert gone == [old] and not old.with_suffix(".json").exists()
    assert used.is_file() and new.is_file()
    # The package just built stays even when it alone is over the bound.
    assert aotinductor.evict(tmp_path, 100 * 1024, keep=new) == [used] and new.is_file()

"""The SavedModel certificate runs serving_default as TF Serving does (a session), so a SavedModel
that works only eagerly fails its certificate instead of failing later in TF Serving."""

from __future__ import annotations

import numpy as np
import pytest


def _save(path, keras_inside_module: bool):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    spec = [tf.TensorSpec([None, 4], tf.float32, name="input")]
    if keras_inside_module:  # tensorflow/serving#2226: its variables are missing in a session

        class Wrapper(tf.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            @tf.function(input_signature=spec)
            def serve(self, input):
                return {"logits": self.m(input)}

        module = Wrapper(model)
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    else:  # what the exporters write for Keras sources
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda input: {"logits": model(input)}, input_signature=spec)
        archive.write_out(str(path))
    return model


def test_session_runner_matches_the_model(tmp_path):
    from exporters.targets import savedmodel

    model = _save(tmp_path / "1", keras_inside_module=False)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = savedmodel.runner(tmp_path / "1", None)({"input": x})
    np.testing.assert_allclose(out["logits"], model(x).numpy(), atol=1e-6)


def test_a_savedmodel_tf_serving_cannot_run_fails_its_certificate(tmp_path):
    from exporters.targets import savedmodel
    from services.tfserving.models import ServingError

    _save(tmp_path / "1", keras_inside_module=True)
    run = savedmodel.runner(tmp_path / "1", None)
    with pytest.raises(ServingError, match="Could not find variable") as err:  # as TF Serving says
        run({"input": np.ones((1, 4), np.float32)})
    assert err.value.code == "FAILED_PRECONDITION"

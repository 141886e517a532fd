from pathlib import Path

import pytest

from tests.loadtests.fakes import make_model


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    make_model(root, "digits-cnn-torch", seed=0)
    make_model(root, "digits-cnn-keras", seed=1, framework="keras")
    return root

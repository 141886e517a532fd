from pathlib import Path

import pytest

from tests.loadtests.fakes import make_model, make_token_model


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model_store")
    make_model(root, "digits-cnn-torch", seed=0)
    make_model(root, "digits-cnn-keras", seed=1, framework="keras")
    return root


@pytest.fixture(scope="session")
def token_store(tmp_path_factory) -> Path:
    """The transformer example pair's signature: input_ids + attention_mask -> logits (+ length)."""
    root = tmp_path_factory.mktemp("token_store")
    make_token_model(root, "digits-transformer-torch", seed=0)
    make_token_model(root, "digits-transformer-keras", seed=1, framework="keras")
    make_model(root, "digits-cnn-torch", seed=0)
    return root

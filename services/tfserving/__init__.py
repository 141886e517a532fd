"""TF Serving runtime: models.config generation, and a stand-in speaking TF Serving's REST and gRPC
APIs when tensorflow_model_server is not installed."""

from services.tfserving.config import write_models_config

__all__ = ["write_models_config"]

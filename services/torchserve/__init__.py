"""TorchServe runtime: the handler packaged into every .mar, its launcher and a readiness probe."""

from services.torchserve.readiness import model_ready, wait_until_ready

__all__ = ["model_ready", "wait_until_ready"]

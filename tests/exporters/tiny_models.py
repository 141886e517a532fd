"""Small user models for the exporter tests (importable as tests.exporters.tiny_models:factory)."""

import torch
from torch import nn


def linear() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


class Bessel(nn.Module):
    """Uses an operator no ONNX exporter can handle."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return torch.special.bessel_j0(self.fc(x))


def bessel() -> nn.Module:
    return Bessel()

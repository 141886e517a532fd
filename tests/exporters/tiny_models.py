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


VOCAB = 20


class TwoInputs(nn.Module):
    """A float input and an int64 ids input (with an embedding: the vocabulary is known), returning
    a dict of two outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, 4)
        self.fc = nn.Linear(6, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, features, ids):
        pooled = self.embed(ids).mean(dim=1) + self.fc(features)
        return {"scores": self.head(torch.relu(pooled)), "pooled": pooled}


def two_inputs() -> nn.Module:
    return TwoInputs()


class IdsNoEmbedding(nn.Module):
    """Integer ids used as numbers: nothing says which ids are valid."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(ids.float() / 10.0)


def ids_no_embedding() -> nn.Module:
    return IdsNoEmbedding()


class Constant(nn.Module):
    """An output that does not depend on the input: parity on it would prove nothing."""

    def forward(self, x):
        return torch.zeros_like(x[:, :3]) * x[:, :3] + 1.0


def constant() -> nn.Module:
    return Constant()


class FlatSoftmax(nn.Module):
    """Softmax over identical logits: 1/classes everywhere whatever the input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 1)

    def forward(self, x):
        return torch.softmax(self.fc(x).repeat(1, 4), dim=1)


def flat_softmax() -> nn.Module:
    return FlatSoftmax()


def conv() -> nn.Module:
    """A convolution: lowering it re-runs torch's fake conv kernel, whose backend choice by batch
    size once narrowed an ExecuTorch program's batch bound (exporters/targets/executorch.py)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))

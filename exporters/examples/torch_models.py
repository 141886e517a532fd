"""PyTorch versions of the example architectures (no torchvision: there is no CPU build here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def digits_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )  # fmt: skip


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True):
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.001),
    ]
    return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), width 1.0, as keras.applications.MobileNetV2 builds it
    (with classifier_activation=None: both return logits)."""

    # expansion, channels, repeats, first stride
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(_conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def mobilenet_v2() -> nn.Module:
    return MobileNetV2()


def calibrate_batchnorm(model: nn.Module, x: np.ndarray) -> nn.Module:
    """Set every BatchNorm's statistics from one batch. A randomly initialised deep net otherwise
    collapses to near-constant outputs, and a parity check on constants proves nothing."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch -> exactly its statistics
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    return model.eval()


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain matmul/softmax (not nn.MultiheadAttention): it exports to
    ONNX as ordinary ops, and the Keras twin can mirror it weight for weight."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # [b, s, d] -> [b, heads, s, head_dim]
            return t.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = q @ k.transpose(-1, -2) * self.head_dim**-0.5 + bias
        h = torch.softmax(scores, dim=-1) @ v
        return self.out(h.transpose(1, 2).reshape(b, s, d))


class EncoderLayer(nn.Module):
    """Post-LN (original Transformer / BERT order): x = LN(x + attn(x)); x = LN(x + ffn(x)).
    Dropout on each branch only in training (1,437 images overfit without it); eval graphs have none."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.attn = SelfAttention(d, heads)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d))  # ReLU: GELU varies by converter
        self.norm2 = nn.LayerNorm(d, eps=1e-5)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x, bias)))
        return self.norm2(x + self.drop(self.ffn(x)))


class TokenTransformer(nn.Module):
    """Tiny encoder-only classifier: token + learned position embeddings, encoder layers, masked mean
    pooling, linear head. Any sequence length up to max_len works (positions are sliced at runtime)."""

    def __init__(self, vocab: int, max_len: int, classes: int = 10, d: int = 32, heads: int = 2,
                 ffn: int = 64, layers: int = 2, dropout: float = 0.1):  # fmt: skip
        super().__init__()
        self.tokens = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn, dropout) for _ in range(layers))
        self.classifier = nn.Linear(d, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tokens(input_ids) + self.positions.weight[: input_ids.shape[1]])
        m = attention_mask.to(x.dtype)
        # Additive key bias, finite: -inf would make fully masked rows NaN, and some converters choke on it.
        bias = (1.0 - m)[:, None, None, :] * -1e9
        for layer in self.layers:
            x = layer(x, bias)
        m = m[:, :, None]
        return self.classifier((x * m).sum(1) / m.sum(1).clamp(min=1.0))


def token_transformer() -> nn.Module:
    from exporters.examples.tokens import MAX_LEN, VOCAB_SIZE

    return TokenTransformer(VOCAB_SIZE, MAX_LEN)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def train_tokens(model: nn.Module, ids: np.ndarray, mask: np.ndarray, y: np.ndarray, epochs: int,
                 seed: int = 0) -> nn.Module:  # fmt: skip
    """As train(), for (input_ids, attention_mask) models; each batch is cut to its longest sequence.
    Adam 3e-3 with a per-step cosine decay to 0: converges in fewer epochs, and ends without the
    epoch-to-epoch swings a constant rate leaves. Same schedule as keras_models.train_tokens."""
    from exporters.examples.tokens import batch_trim

    torch.manual_seed(seed)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * -(-len(yt) // 32))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(32):
            b_ids, b_mask = batch_trim(ids[idx.numpy()], mask[idx.numpy()])
            opt.zero_grad()
            loss_fn(model(torch.from_numpy(b_ids), torch.from_numpy(b_mask)), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy_tokens(model: nn.Module, ids: np.ndarray, mask: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
    return float((logits.argmax(1).numpy() == y).mean())

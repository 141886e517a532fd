"""Source models: a trained model in its own framework, with its signature and a reference batch.

The source is the ground truth every artifact is checked against (parity.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from model_store.manifest import Signature, Source


@dataclass
class SourceModel:
    name: str
    info: Source  # framework, version, architecture, weights, accuracy
    signature: Signature
    reference_inputs: np.ndarray  # the fixed held-out batch (first dim = batch)
    reference_labels: np.ndarray | None
    predict: Callable[[np.ndarray], list[np.ndarray]]  # outputs in signature order
    native: Any = field(repr=False)  # nn.Module / ScriptModule / keras.Model / tf callable
    workdir: Path | None = None

    @property
    def framework(self) -> str:
        return self.info.framework

    @property
    def input(self):
        return self.signature.inputs[0]


class SourceError(Exception):
    """The model file could not be loaded or its signature determined; the message says why."""

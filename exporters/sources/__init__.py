"""Source models: a trained model in its own framework, with its signature and a reference batch.

The source is the ground truth every artifact is checked against (parity.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from model_store.manifest import Signature, Source, TensorSpec


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


def make_signature(
    input_name: str,
    input_shape: list[int | None],
    input_dtype: np.dtype,
    outputs: list[np.ndarray],
    output_names: list[str] | None,
    layout: str | None,
) -> Signature:
    """The source's signature: batch dimension first and free (-1), unknown dimensions -1, outputs
    named output_0.. unless names are given."""
    from services.common.codecs import oip_datatype

    names = output_names or [f"output_{i}" for i in range(len(outputs))]
    if len(names) != len(outputs):
        raise SourceError(f"model returns {len(outputs)} outputs, {len(names)} names were given")
    dims = [-1 if d is None else int(d) for d in input_shape]
    return Signature(
        inputs=[TensorSpec(name=input_name, datatype=oip_datatype(np.dtype(input_dtype)), shape=[-1, *dims], layout=layout)],
        outputs=[TensorSpec(name=n, datatype=oip_datatype(o.dtype), shape=[-1, *o.shape[1:]]) for n, o in zip(names, outputs)],
    )

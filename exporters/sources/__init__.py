"""Source models: a trained model in its own framework, with its signature and a reference batch.

The source is the ground truth every artifact is checked against (parity.py). Signatures have N
named inputs and N named outputs. Outputs that are tuples, lists, dicts or Hugging Face
ModelOutputs are flattened in a stable, documented order (flatten_outputs): a tensor is one output;
a tuple/list contributes its items in order; a dict (ModelOutput included) its items in key order
as the model returns them; nested containers join their keys with "_" (e.g. "hidden_states_0").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from contract.datatypes import DatatypeError, oip_datatype
from contract.manifest import Signature, Source, TensorSpec

Arrays = dict[str, np.ndarray]


@dataclass
class SourceModel:
    name: str
    info: Source  # framework, version, architecture, weights, accuracy
    signature: Signature
    reference_inputs: Arrays  # the fixed held-out batch, one array per input (first dim = batch)
    reference_labels: np.ndarray | None
    predict: Callable[[Arrays], list[np.ndarray]]  # outputs in signature order
    native: Any = field(repr=False)  # nn.Module / ScriptModule / keras.Model / loaded SavedModel
    inputs_note: str = "held-out samples"  # how the reference inputs were drawn (parity certificate)
    workdir: Path | None = None
    # The source's outputs per parity case (parity.source_outputs): computed once, so that every
    # artifact is checked against the same arrays and the source does not re-run per format.
    case_outputs: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def framework(self) -> str:
        return self.info.framework

    @property
    def batch(self) -> int:
        return len(next(iter(self.reference_inputs.values())))


class SourceError(Exception):
    """The model could not be loaded or its signature determined; the message says why and what
    to give instead."""


def flatten_outputs(result: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(name, leaf) pairs in the documented order; leaves are framework tensors / arrays."""
    if isinstance(result, dict):  # ModelOutput is a dict subclass holding only its non-None fields
        items = [(str(k), v) for k, v in result.items() if v is not None]
    elif isinstance(result, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(result)]
    else:
        return [(prefix or "output_0", result)]
    out: list[tuple[str, Any]] = []
    for key, value in items:
        name = f"{prefix}_{key}" if prefix else key
        if isinstance(value, (dict, tuple, list)):
            out += flatten_outputs(value, name)
        else:
            out.append((name, value))
    if not isinstance(result, dict) and not prefix:  # a top-level tuple: output_0, output_1, ...
        out = [(f"output_{n}" if n.isdigit() else n, v) for n, v in out]
    return out


def output_specs(outputs: list[tuple[str, np.ndarray]], names: list[str] | None) -> list[TensorSpec]:
    if names is not None and len(names) != len(outputs):
        raise SourceError(f"the model returns {len(outputs)} outputs ({[n for n, _ in outputs]}), "
                          f"{len(names)} names were given")  # fmt: skip
    specs = []
    for i, (name, arr) in enumerate(outputs):
        try:
            datatype = oip_datatype(arr.dtype)
        except DatatypeError as e:
            raise SourceError(f"output {name!r}: {e}") from None
        specs.append(TensorSpec(name=names[i] if names else name, datatype=datatype, shape=[-1, *arr.shape[1:]]))
    return specs


def check_unique(specs: list[TensorSpec], what: str) -> None:
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise SourceError(f"{what} names must be unique, {sorted(dup)} repeat")

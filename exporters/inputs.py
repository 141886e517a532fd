"""Input signatures given on the command line, and reference inputs that make parity meaningful.

`--input NAME:DTYPE:DIMS`, e.g. `input_ids:int64:batch,seq` or `pixels:float32:batch,3,224,224`:
every dimension is listed, batch first; a number is a fixed size, a name a dynamic dimension.

Reference inputs, when the user gives none: floats uniform in [0, 1); token ids uniform in the
model's vocabulary (read from its embedding, else --vocab-size); masks valid (each row a prefix of
ones of random length, the rest padding); segment ids 0 then 1 inside the mask. Dynamic dimensions
get DYNAMIC_SIZE. A batch whose inputs are constant is refused: parity on it proves nothing.
"""

from __future__ import annotations

import re

import numpy as np

from contract.datatypes import DatatypeError, is_integer, oip_datatype
from contract.manifest import TensorSpec
from exporters.sources import Arrays, SourceError

DYNAMIC_SIZE = 16  # reference size of a dynamic non-batch dimension (sequence length, ...)
SEED = 0


def parse_input(text: str) -> TensorSpec:
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise SourceError(f"--input must look like NAME:DTYPE:DIMS (e.g. input_ids:int64:batch,seq), got {text!r}")
    name, dtype, dims = parts
    try:
        datatype = oip_datatype(np.dtype(dtype))
    except (TypeError, DatatypeError):
        raise SourceError(f"--input {text!r}: unknown dtype {dtype!r} (float32, int64, int32, uint8, bool, ...)") from None
    shape, names = [], []
    for d in dims.split(","):
        d = d.strip()
        if re.fullmatch(r"\d+", d) and int(d) > 0:
            shape.append(int(d))
            names.append("")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d):
            shape.append(-1)
            names.append(d)
        else:
            raise SourceError(f"--input {text!r}: dimension {d!r} is neither a positive size nor a name")
    if not shape:
        raise SourceError(f"--input {text!r} has no dimensions")
    if shape[0] != -1:
        raise SourceError(f"--input {text!r}: list the batch dimension first, as a name (e.g. batch,{dims})")
    return TensorSpec(name=name, datatype=datatype, shape=shape, dims=names, role=infer_role(name, datatype))


def infer_role(name: str, datatype: str) -> str | None:
    """What an integer input's values mean, from its name (the convention of BERT-style models)."""
    if not is_integer(datatype) and datatype != "BOOL":
        return None
    n = name.lower()
    if "mask" in n:
        return "mask"
    if "type" in n or "segment" in n:
        return "segment_ids"
    if is_integer(datatype):
        return "token_ids"
    return None


def with_roles(specs: list[TensorSpec], vocab_size: int | None) -> list[TensorSpec]:
    """Fill role and value_range of integer inputs; SourceError if a token range is unknown."""
    out = []
    for s in specs:
        role = s.role or infer_role(s.name, s.datatype)
        rng = s.value_range
        if rng is None and role == "token_ids":
            if not vocab_size:
                raise SourceError(
                    f"input {s.name!r} holds integer ids, but the model's vocabulary size could not be "
                    "read from an embedding: give --vocab-size N (ids are drawn from [0, N)) or "
                    "--sample-data with real inputs"
                )
            rng = (0, vocab_size)
        elif rng is None and role in ("mask", "segment_ids"):
            rng = (0, 2)
        out.append(s.model_copy(update={"role": role, "value_range": rng}))
    return out


def concrete_shape(spec: TensorSpec, batch: int) -> list[int]:
    return [batch, *[DYNAMIC_SIZE if d < 0 else d for d in spec.shape[1:]]]


def draw(specs: list[TensorSpec], batch: int = 32, seed: int = SEED) -> tuple[Arrays, str]:
    """Seeded reference inputs for every spec (see the module doc), and a note saying how."""
    rng = np.random.default_rng(seed)
    arrays: Arrays = {}
    notes = []
    masks = [s for s in specs if s.role == "mask"]
    lengths = None
    for s in specs:
        shape = concrete_shape(s, batch)
        dtype = s.numpy_dtype
        if s.role == "mask" or s.role == "segment_ids":
            if lengths is None:
                seq = shape[1] if len(shape) > 1 else 1
                lengths = rng.integers(max(1, seq // 2), seq + 1, size=batch)
                lengths[0] = seq  # one full row, so every position is exercised
            pos = np.arange(shape[1] if len(shape) > 1 else 1)[None, :]
            if s.role == "mask":
                a = pos < lengths[:, None]
            else:
                a = (pos >= (lengths[:, None] // 2)) & (pos < lengths[:, None])
            arrays[s.name] = a.astype(dtype).reshape(shape)
            notes.append(f"{s.name}: valid {s.role} (lengths {int(lengths.min())}-{int(lengths.max())})")
        elif s.role == "token_ids" and s.value_range:
            lo, hi = int(s.value_range[0]), int(s.value_range[1])
            arrays[s.name] = rng.integers(lo, hi, size=shape).astype(dtype)
            notes.append(f"{s.name}: uniform ids in [{lo}, {hi})")
        elif s.datatype == "BOOL":
            arrays[s.name] = rng.random(shape) < 0.5
            notes.append(f"{s.name}: random booleans")
        elif is_integer(s.datatype):
            lo, hi = (int(s.value_range[0]), int(s.value_range[1])) if s.value_range else (0, 10)
            arrays[s.name] = rng.integers(lo, hi, size=shape).astype(dtype)
            notes.append(f"{s.name}: uniform integers in [{lo}, {hi})")
        else:
            arrays[s.name] = rng.random(shape, dtype=np.float64).astype(dtype)
            notes.append(f"{s.name}: uniform [0, 1)")
    if masks and lengths is not None:  # ids past the mask are padding: 0 by convention
        for s in specs:
            if s.role == "token_ids" and len(arrays[s.name].shape) == 2:
                arrays[s.name][np.arange(arrays[s.name].shape[1])[None, :] >= lengths[:, None]] = 0
    return arrays, "seeded random inputs: " + "; ".join(notes)


def check_meaningful(arrays: Arrays) -> None:
    """Refuse a reference batch with a constant input: parity on it proves nothing."""
    for name, a in arrays.items():
        if a.size > 1 and a.dtype != np.bool_ and np.all(a == a.flat[0]):
            raise SourceError(
                f"reference input {name!r} is constant ({a.flat[0]!r} everywhere): a parity "
                "certificate on it would prove nothing. Give --sample-data with real inputs, or "
                "--vocab-size for token ids"
            )


def check_outputs_vary(outputs: dict[str, np.ndarray], tolerance: float) -> None:
    """Refuse a source whose float outputs hardly vary over the reference batch: within a few
    tolerances, every artifact would 'match' it (the softmax of a random-init network is 1/classes
    everywhere; activations that vanish through a deep random-init net give logits of 1e-10)."""
    for name, a in outputs.items():
        if a.dtype.kind != "f" or a.ndim == 0 or a.shape[0] < 2:
            continue
        a64 = a.astype(np.float64)
        spread = float(np.max(np.abs(a64 - a64[:1])))
        scale = max(1.0, float(np.max(np.abs(a64))))
        if not spread > 10 * tolerance * scale:
            raise SourceError(
                f"output {name!r} hardly varies over the reference samples (spread {spread:.2g}, "
                f"largest value {float(np.max(np.abs(a64))):.2g}): parity within tolerance {tolerance:g} "
                "would prove nothing. Typical causes: a randomly initialised network (activations "
                "vanish, or a softmax gives 1/classes everywhere): export logits "
                "(e.g. classifier_activation=None) and trained weights, or calibrate BatchNorm "
                "statistics on sample inputs; or give --sample-data with real inputs"
            )


def crop(arrays: Arrays, specs: list[TensorSpec], size: int) -> Arrays | None:
    """The batch with every dynamic non-batch dimension cut to `size` (None if there is none):
    parity at a second shape proves the artifact's dynamic dimensions work."""
    by_name = {s.name: s for s in specs}
    out, cut = {}, False
    for name, a in arrays.items():
        spec = by_name[name]
        index = tuple(slice(0, size) if d < 0 and i > 0 and a.shape[i] > size else slice(None)
                      for i, d in enumerate(spec.shape))  # fmt: skip
        cut = cut or any(s.stop is not None for s in index)
        out[name] = np.ascontiguousarray(a[index])
    for s in specs:  # a mask cropped to all-padding rows would be degenerate: keep one token
        if s.role == "mask" and out[s.name].ndim == 2:
            out[s.name][:, 0] = 1
    return out if cut else None

"""The digits data set read as token sequences, for the transformer examples: each 8x8 image is its
64 intensities in row-major order, trailing blank tokens cropped, so lengths vary (59-64: none of
the 1,797 images has a whole blank row, but many end in blank pixels). Batches are right-padded
with id 0 and an attention mask. Same split as data.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from exporters.examples.data import SEED

VOCAB_SIZE = 18  # intensities 0..16 -> ids 1..17, 0 is padding
MAX_LEN = 64
PAD_ID = 0


@dataclass(frozen=True)
class DigitTokens:
    ids_train: np.ndarray  # (n, train max length) int64, 0-padded
    mask_train: np.ndarray  # (n, train max length) int64, 1 = token, 0 = padding
    y_train: np.ndarray  # (n,) int64
    ids_test: np.ndarray
    mask_test: np.ndarray
    y_test: np.ndarray


def to_sequence(image: np.ndarray) -> np.ndarray:
    """One image (64 intensities 0-16) as token ids 1-17, trailing zero intensities dropped. At
    least one token is kept, so an all-blank image still has a token to pool over."""
    tokens = np.asarray(image, dtype=np.int64).reshape(-1)
    ink = np.flatnonzero(tokens)
    keep = int(ink[-1]) + 1 if ink.size else 1
    return tokens[:keep] + 1


def pad(sequences: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to `length` (default: the longest sequence): (ids, mask), both int64 [n, length]."""
    length = max(len(s) for s in sequences) if length is None else length
    ids = np.full((len(sequences), length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for i, s in enumerate(sequences):
        if len(s) > length:
            raise ValueError(f"sequence of length {len(s)} does not fit in {length}")
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask


def load_digit_tokens() -> DigitTokens:
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    data = sk_load()
    seqs = [to_sequence(img) for img in data.data]
    y = data.target.astype(np.int64)
    # Split indices rather than arrays: the sequences are ragged. Same arguments as data.py, so the
    # same images land in train and test.
    i_train, i_test = train_test_split(np.arange(len(y)), test_size=0.2, random_state=SEED, stratify=y)
    ids_train, mask_train = pad([seqs[i] for i in i_train])
    ids_test, mask_test = pad([seqs[i] for i in i_test])
    return DigitTokens(ids_train, mask_train, y[i_train], ids_test, mask_test, y[i_test])


def length_distribution(mask: np.ndarray) -> dict[int, int]:
    """Sequence length -> count."""
    return dict(sorted(Counter(mask.sum(axis=1).tolist()).items()))


def batch_trim(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the columns that are padding in every row (pad a batch to its own longest)."""
    length = int(mask.sum(axis=1).max())
    return ids[:, :length], mask[:, :length]

"""The token convention of character data: ids PAD 0, BOS 1, EOS 2, UNK 3, then the alphabet from FIRST = 4.

A batch of text is one (N, T) long tensor: each row's characters, EOS, then PAD.
"""
from __future__ import annotations

import numpy as np
import torch

PAD, BOS, EOS, UNK = 0, 1, 2, 3
FIRST = 4                          # id of the alphabet's first character


def to_text(tokens: torch.Tensor, alphabet: str) -> list[str]:
    """Token rows -> strings, up to (without) the first EOS or PAD; an unknown character is shown as '?'."""
    out = []
    for row in tokens.tolist():
        chars = []
        for t in row:
            if t in (EOS, PAD):
                break
            chars.append(alphabet[t - FIRST] if FIRST <= t < FIRST + len(alphabet) else "?")
        out.append("".join(chars))
    return out


def encode_text(lines: list[str], alphabet: str, width: int | None = None) -> torch.Tensor:
    """Strings -> (N, width) token tensor: characters (unknown ones -> UNK), EOS, then PAD."""
    index = {c: FIRST + i for i, c in enumerate(alphabet)}
    width = width or max(len(s) for s in lines) + 1
    out = np.full((len(lines), width), PAD, dtype=np.int64)
    for i, s in enumerate(lines):
        ids = [index.get(c, UNK) for c in s[:width - 1]] + [EOS]
        out[i, :len(ids)] = ids
    return torch.from_numpy(out)


def encode_known(text: str, alphabet: str) -> tuple[torch.Tensor, str]:
    """One string typed by a user -> ((1, len + 1) tokens, the string encoded). Upper case is folded to lower
    when the alphabet has no capitals; a character still outside the alphabet is a ValueError naming it (the
    models give UNK probability 0, so it is never encoded silently)."""
    if not any(c.isupper() for c in alphabet):
        text = text.lower()
    missing = sorted(set(text) - set(alphabet))
    if missing:
        raise ValueError(f"character{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         f"not in the model's alphabet {alphabet!r}")
    return encode_text([text], alphabet), text

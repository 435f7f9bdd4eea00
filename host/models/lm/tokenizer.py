"""The built-in LM's tokenizer: one token per UTF-8 byte (``tokenizer.json``).

Token id = byte value, vocabulary 256. BOS and EOS are the ASCII control
codes STX (2) and ETX (3), "start of text" and "end of text"; text containing
them is refused, so every id sequence decodes without ambiguity.
"""

import json
from pathlib import Path

TOKENIZER_PATH = Path(__file__).resolve().parent / "tokenizer.json"

with open(TOKENIZER_PATH, encoding="utf-8") as _fh:
    _SPEC = json.load(_fh)

VOCAB_SIZE = _SPEC["vocab_size"]
BOS = _SPEC["bos_token_id"]
EOS = _SPEC["eos_token_id"]
ENCODING = _SPEC["encoding"]

__all__ = ["TOKENIZER_PATH", "VOCAB_SIZE", "BOS", "EOS", "encode", "decode"]


def encode(text, bos=True, eos=False):
    """``text`` (str) -> list of token ids, with BOS first unless ``bos=False``.

    Raises ``TypeError`` for a non-str and ``ValueError`` if the text holds the
    BOS or EOS characters.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    data = text.encode(ENCODING)
    for special, name in ((BOS, "BOS"), (EOS, "EOS")):
        if special in data:
            raise ValueError(f"text contains byte {special:#04x}, reserved as the {name} token")
    return ([BOS] if bos else []) + list(data) + ([EOS] if eos else [])


def decode(ids):
    """Token ids -> str: BOS and EOS dropped, invalid UTF-8 shown as U+FFFD.

    Raises ``ValueError`` for an id outside ``[0, VOCAB_SIZE)``.
    """
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < VOCAB_SIZE]
    if bad:
        raise ValueError(f"token id {bad[0]} outside the vocabulary [0, {VOCAB_SIZE})")
    return bytes(i for i in ids if i not in (BOS, EOS)).decode(ENCODING, errors="replace")

"""Byte-level tokenizers (``tokenizer.json`` of type "byte-level"), and the built-in LM's.

Token id = UTF-8 byte value, vocabulary 256. The built-in LM's BOS and EOS are
the ASCII control codes STX (2) and ETX (3), "start of text" and "end of
text"; text containing a special token's byte is refused, so every id sequence
decodes without ambiguity. :class:`ByteTokenizer` reads any such file (``trilut
generate --model DIR``); the module-level names are the built-in LM's.
"""

import json
from pathlib import Path

TOKENIZER_PATH = Path(__file__).resolve().parent / "tokenizer.json"

__all__ = ["ByteTokenizer", "TOKENIZER_PATH", "VOCAB_SIZE", "BOS", "EOS", "ENCODING",
           "encode", "decode"]


class ByteTokenizer:
    """The byte-level tokenizer described by the ``tokenizer.json`` at ``path``.

    Raises ``FileNotFoundError`` when there is no such file and ``ValueError`` when
    it is not of type "byte-level".
    """

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer.json (generation needs a byte-level "
                                    f"tokenizer beside the checkpoint)")
        spec = json.loads(path.read_text(encoding="utf-8"))
        if spec.get("type") != "byte-level":
            raise ValueError(f"{path}: tokenizer type {spec.get('type')!r}, only 'byte-level' "
                             f"is supported")
        self.vocab_size = spec.get("vocab_size", 256)
        self.bos, self.eos = spec["bos_token_id"], spec["eos_token_id"]
        self.encoding = spec.get("encoding", "utf-8")

    def encode(self, text, bos=True, eos=False):
        """``text`` (str) -> list of token ids, with BOS first unless ``bos=False``.

        Raises ``TypeError`` for a non-str and ``ValueError`` if the text holds the
        BOS or EOS byte.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        data = text.encode(self.encoding)
        for special, name in ((self.bos, "BOS"), (self.eos, "EOS")):
            if special in data:
                raise ValueError(f"text contains byte {special:#04x}, reserved as the {name} token")
        return ([self.bos] if bos else []) + list(data) + ([self.eos] if eos else [])

    def decode(self, ids):
        """Token ids -> str: BOS and EOS dropped, invalid UTF-8 shown as U+FFFD.

        Raises ``ValueError`` for an id outside ``[0, vocab_size)``.
        """
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} outside the vocabulary [0, {self.vocab_size})")
        return bytes(i for i in ids if i not in (self.bos, self.eos)).decode(
            self.encoding, errors="replace")


_BUILTIN = ByteTokenizer(TOKENIZER_PATH)
VOCAB_SIZE, BOS, EOS, ENCODING = _BUILTIN.vocab_size, _BUILTIN.bos, _BUILTIN.eos, _BUILTIN.encoding
encode, decode = _BUILTIN.encode, _BUILTIN.decode

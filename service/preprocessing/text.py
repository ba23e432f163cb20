"""The Chinese BERT WordPiece tokenizer of Chinese-CLIP, torch-free.

Ids are identical to the official ``cn_clip.clip.tokenize()``: ``[CLS] + ids[:L-2] + [SEP]`` right-padded
with 0. The work is done by the Rust ``tokenizers`` library (BertNormalizer, BertPreTokenizer, WordPiece);
a small pre-normalisation step in Python (``ChineseTokenizer._prepare``) closes the gaps where the Rust
normaliser differs from the official Python ``BasicTokenizer`` (found by running every code point through
both, alone and between other characters; the tests keep doing so):

- Rust's Unicode tables are older than Python's, and it deletes private-use / unassigned characters
  that Python keeps (they become ``[UNK]``). Every character whose category changed since Unicode 3.2,
  plus private-use, surrogate and unassigned ones, is rewritten here to what the Python tokenizer makes
  of it (deleted, a space, a punctuation mark or a word character), using stand-ins that are not in the
  vocab and that both implementations classify alike.
- ``tokenizers`` treats U+2B820..U+2B91F as non-CJK; Python spaces them out like other CJK characters.
- Python lower-cases word by word, so a word-final capital sigma becomes "ς"; Rust maps "Σ" to "σ".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

DEFAULT_VOCAB = Path(__file__).with_name("vocab.txt")
DEFAULT_CONTEXT_LENGTH = 52
CLS, SEP, UNK, PAD_ID = "[CLS]", "[SEP]", "[UNK]", 0
MAX_CHARS_PER_WORD = 200

# Stand-ins for characters the Rust tables may not know: old (Unicode 1.1) characters, stable under
# lower-casing and NFD, that keep their meaning for the tokenizer: symbols (part of a word) and
# punctuation marks (split off). The first one outside the vocab is used.
_WORD_STAND_INS = "\u2601\u2602\u2603\u2604"  # ☁☂☃☄
_PUNCT_STAND_INS = "\u2017\u2016\u2020\u2021"  # ‗‖†‡
_RUST_MISSING_CJK = range(0x2B820, 0x2B920)
_OFFICIAL_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_official_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _OFFICIAL_CJK)


def _is_official_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


class _PythonBertRewrite(dict[int, str | int | None]):
    """A ``str.translate`` table, filled lazily, mapping each code point to what the official Python
    tokenizer makes of it when the Rust normaliser might disagree (identity otherwise)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self._vocab = vocab
        self._word = self._unknown(_WORD_STAND_INS)
        self._punct = self._unknown(_PUNCT_STAND_INS)

    def _unknown(self, candidates: str) -> str:
        for char in candidates:
            if not self._known(char):
                return char
        raise ValueError(f"the vocab holds all of {candidates!r}; no stand-in is left for unknown characters")

    def __missing__(self, cp: int) -> str | int | None:
        self[cp] = value = self._rewrite(cp)
        return value

    def _known(self, char: str) -> bool:
        return char in self._vocab or "##" + char in self._vocab

    def _rewrite(self, cp: int) -> str | int | None:
        char = chr(cp)
        category = unicodedata.category(char)
        if cp in _RUST_MISSING_CJK:
            return f" {self._word} "
        if not _is_risky(char) or self._known(char):
            return cp
        # The official clean_text: drop NUL, U+FFFD and control/format characters, space out whitespace.
        if char in "\t\n\r" or category == "Zs":
            return " "
        if cp == 0 or cp == 0xFFFD or category in ("Cc", "Cf"):
            return None
        # Then, per word: lower-case, NFD, drop non-spacing marks (done here so Rust sees final text).
        stripped = unicodedata.normalize("NFD", char.lower())
        out = []
        for c in stripped:
            if unicodedata.category(c) == "Mn":
                continue
            if self._known(c) or not _is_risky(c):
                out.append(c)
            else:
                out.append(self._punct if _is_official_punctuation(c) else self._word)
        text = "".join(out)
        return f" {text} " if _is_official_cjk(cp) else text


def _is_risky(char: str) -> bool:
    """Whether the Rust tables (older Unicode; private-use and unassigned count as control) may disagree."""
    category = unicodedata.category(char)
    return category in ("Co", "Cs", "Cn") or category != unicodedata.ucd_3_2_0.category(char)


_CAPITAL_SIGMA = "Σ"
_WORD = re.compile(r"\S+")


def _official_words(text: str) -> str:
    """The official clean_text and CJK spacing, so that ``\\S+`` finds the words Python lower-cases."""
    out = []
    for c in text:
        if c in "\t\n\r" or unicodedata.category(c) == "Zs":
            out.append(" ")
        elif c in "\x00\ufffd" or unicodedata.category(c) in ("Cc", "Cf"):
            continue
        else:
            out.append(f" {c} " if _is_official_cjk(ord(c)) else c)
    return "".join(out)


class ChineseTokenizer:
    """Chinese-CLIP's tokenizer. ``tokenize`` equals the official ``tokenize()``; ``encode`` + ``pad``
    give unpadded / minimally padded ids for engines that run short queries without padding."""

    def __init__(self, vocab_file: Path, vocab: dict[str, int], context_length: int) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 ([CLS] and [SEP]), got {context_length}")
        for special in (CLS, SEP, UNK):
            if special not in vocab:
                raise ValueError(f"vocab file {vocab_file} has no {special} token; is it a BERT vocab?")
        self.vocab_file = vocab_file
        self.vocab = vocab
        self.context_length = context_length
        self._rewrite = _PythonBertRewrite(vocab)

    @classmethod
    def from_vocab(
        cls, path: str | Path | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> ChineseTokenizer:
        """Load a BERT vocab (one token a line; default: the shipped 21,128-token Chinese vocab)."""
        vocab_file = Path(path) if path is not None else DEFAULT_VOCAB
        if not vocab_file.is_file():
            raise FileNotFoundError(f"vocab file {vocab_file} does not exist; pass the bundle's vocab.txt")
        vocab: dict[str, int] = {}
        with vocab_file.open(encoding="utf-8") as f:
            # As the official loader: strip each line; a repeated token keeps its last index.
            for index, line in enumerate(f):
                vocab[line.strip()] = index
        return cls(vocab_file, vocab, context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @cached_property
    def _tokenizer(self) -> Tokenizer:
        tok = Tokenizer(
            models.WordPiece(vocab=self.vocab, unk_token=UNK, max_input_chars_per_word=MAX_CHARS_PER_WORD)
        )
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        # [CLS]/[SEP] and truncation are added in ``encode``: cheaper than Rust's post-processor and
        # truncation, which build overflow encodings.
        return tok

    @staticmethod
    def normalize(text: str) -> str:
        """The official training/evaluation text normalisation: lower-case, curly double quotes → '"'."""
        return text.lower().replace("“", '"').replace("”", '"')

    def _prepare(self, text: str) -> str:
        if _CAPITAL_SIGMA in text:
            # Python lower-cases each whitespace-separated word, so a final sigma is contextual; done
            # before the rewrite, whose stand-ins would change the context.
            text = _WORD.sub(lambda m: m.group().lower(), _official_words(text))
        return text.translate(self._rewrite)

    def encode(self, texts: str | Sequence[str], normalize: bool = True) -> list[list[int]]:
        """``[CLS] … [SEP]`` ids per text, truncated to ``context_length``, not padded."""
        if isinstance(texts, str):
            texts = [texts]
        prepared = [self._prepare(self.normalize(t) if normalize else t) for t in texts]
        cls, sep, keep = self.vocab[CLS], self.vocab[SEP], self.context_length - 2
        encodings = self._tokenizer.encode_batch_fast(prepared, add_special_tokens=False)
        return [[cls, *e.ids[:keep], sep] for e in encodings]

    def pad(
        self, encoded: Sequence[Sequence[int]], length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad with 0 to ``length`` (default: the longest). Returns int64 ``(input_ids, attention_mask)``."""
        longest = max((len(ids) for ids in encoded), default=0)
        if length is None:
            length = longest
        elif length < longest:
            raise ValueError(f"cannot pad to length {length}: the longest sequence has {longest} tokens")
        input_ids = np.full((len(encoded), length), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), length), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def tokenize(self, texts: str | Sequence[str], normalize: bool = False) -> np.ndarray:
        """int64 ``[N, context_length]``, identical to the official ``cn_clip.clip.tokenize()``."""
        return self.pad(self.encode(texts, normalize=normalize), self.context_length)[0]

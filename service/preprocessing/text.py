"""Tokenizers, torch-free: one class for every model family, driven by a Hugging Face ``tokenizer.json``.

``TextTokenizer`` loads a ``tokenizers`` file (a bundle's ``tokenizer.json``), truncates to the context
length keeping the special tokens the file's post-processor adds, and pads with the model's pad id. A
family whose reference tokenizer the Rust library does not reproduce names a Python pre-step
(``NORMALIZERS``); today one: ``"cn-clip-bert"``.

Chinese-CLIP (``ChineseTokenizer``, ``chinese_clip_tokenizer``): ids are identical to the official
``cn_clip.clip.tokenize()``: ``[CLS] + ids[:L-2] + [SEP]`` right-padded with 0. The work is done by the
Rust ``tokenizers`` library (BertNormalizer, BertPreTokenizer, WordPiece, a ``[CLS] $A [SEP]`` template);
the ``cn-clip-bert`` pre-step in Python (``_CnClipBert``) closes the gaps where the Rust normaliser
differs from the official Python ``BasicTokenizer`` (found by running every code point through both,
alone and between other characters; the tests keep doing so):

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
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

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
BERT_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_bert_cjk(cp: int) -> bool:
    """A "Chinese character" as BERT's Python BasicTokenizer defines it (it spaces each one out)."""
    return any(lo <= cp <= hi for lo, hi in BERT_CJK_RANGES)


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
        return f" {text} " if is_bert_cjk(cp) else text


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
            out.append(f" {c} " if is_bert_cjk(ord(c)) else c)
    return "".join(out)


class _CnClipBert:
    """The ``cn-clip-bert`` pre-step: Chinese-CLIP's query normalisation and the Rust-vs-Python fixes."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self._rewrite = _PythonBertRewrite(vocab)

    @staticmethod
    def normalize(text: str) -> str:
        """The official training/evaluation text normalisation: lower-case, curly double quotes → '"'."""
        return text.lower().replace("“", '"').replace("”", '"')

    def prepare(self, text: str) -> str:
        if _CAPITAL_SIGMA in text:
            # Python lower-cases each whitespace-separated word, so a final sigma is contextual; done
            # before the rewrite, whose stand-ins would change the context.
            text = _WORD.sub(lambda m: m.group().lower(), _official_words(text))
        return text.translate(self._rewrite)


class PreStep:
    """A family's Python text step before the Rust tokenizer: ``normalize`` (applied when ``encode`` is
    asked to normalise queries) and ``prepare`` (always: parity fixes)."""

    def __init__(self, normalize: Callable[[str], str], prepare: Callable[[str], str]) -> None:
        self.normalize = normalize
        self.prepare = prepare


def _cn_clip_bert(vocab: dict[str, int]) -> PreStep:
    step = _CnClipBert(vocab)
    return PreStep(step.normalize, step.prepare)


# The manifest's ``text.normalizer`` names one of these; each is built from the tokenizer's vocab.
NORMALIZERS: dict[str, Callable[[dict[str, int]], PreStep]] = {"cn-clip-bert": _cn_clip_bert}


class TextTokenizer:
    """A ``tokenizers`` tokenizer with a context length and pad id. ``encode`` gives unpadded ids (special
    tokens included, truncated to ``context_length``), ``pad`` pads a batch minimally or to a length."""

    def __init__(
        self, backend: Tokenizer, *, context_length: int, pad_id: int, normalizer: str | None = None
    ) -> None:
        post = backend.post_processor
        specials = post.num_special_tokens_to_add(False) if post is not None else 0
        if context_length <= specials:
            raise ValueError(
                f"context_length must exceed the {specials} special tokens the tokenizer adds, got {context_length}"
            )
        if normalizer is not None and normalizer not in NORMALIZERS:
            raise ValueError(f"unknown text normalizer {normalizer!r}; known: {sorted(NORMALIZERS)}")
        backend.enable_truncation(max_length=context_length)  # counts the post-processor's special tokens
        backend.no_padding()  # padding is ``pad``'s job, per batch
        self.backend = backend
        self.context_length = context_length
        self.pad_id = pad_id
        self.normalizer = normalizer
        self._step = NORMALIZERS[normalizer](self.vocab) if normalizer is not None else None

    @classmethod
    def from_file(
        cls, path: str | Path, *, context_length: int, pad_id: int, normalizer: str | None = None
    ) -> TextTokenizer:
        """Load a Hugging Face ``tokenizer.json``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist; pass the bundle's tokenizer.json")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises a bare Exception for any parse error
            raise ValueError(f"{path} is not a Hugging Face tokenizers file: {exc}") from exc
        return cls(backend, context_length=context_length, pad_id=pad_id, normalizer=normalizer)

    @cached_property
    def vocab(self) -> dict[str, int]:
        return self.backend.get_vocab()

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    def encode(self, texts: str | Sequence[str], normalize: bool = True) -> list[list[int]]:
        """Ids per text, special tokens included, truncated to ``context_length``, not padded.
        ``normalize``: apply the family's query normalisation (Chinese-CLIP: lower case, straight quotes)."""
        if isinstance(texts, str):
            texts = [texts]
        step = self._step
        if step is not None:
            texts = [step.prepare(step.normalize(t) if normalize else t) for t in texts]
        return [e.ids for e in self.backend.encode_batch_fast(list(texts))]

    def pad(
        self, encoded: Sequence[Sequence[int]], length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad with ``pad_id`` to ``length`` (default: the longest). Returns int64 ``(input_ids,
        attention_mask)``."""
        longest = max((len(ids) for ids in encoded), default=0)
        if length is None:
            length = longest
        elif length < longest:
            raise ValueError(f"cannot pad to length {length}: the longest sequence has {longest} tokens")
        input_ids = np.full((len(encoded), length), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encoded), length), dtype=np.int64)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def tokenize(self, texts: str | Sequence[str], normalize: bool = False) -> np.ndarray:
        """int64 ``[N, context_length]``, padded to the context length (Chinese-CLIP: identical to the
        official ``cn_clip.clip.tokenize()``)."""
        return self.pad(self.encode(texts, normalize=normalize), self.context_length)[0]


def read_vocab(path: Path) -> dict[str, int]:
    """A BERT vocab file (one token a line), read as the official loader does: each line stripped, a
    repeated token keeping its last index."""
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.strip()] = index
    return vocab


def chinese_clip_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """Chinese-CLIP's WordPiece tokenizer as a ``tokenizers`` object (saved as a bundle's tokenizer.json;
    serve it with the ``cn-clip-bert`` normalizer). The specials are not added tokens: the official
    tokenizer splits a literal "[CLS]" in a text like any other word."""
    for special in (CLS, SEP, UNK):
        if special not in vocab:
            raise ValueError(f"the vocab has no {special} token; is it a BERT vocab?")
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=MAX_CHARS_PER_WORD))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return tok


class ChineseTokenizer(TextTokenizer):
    """Chinese-CLIP's tokenizer built from a vocab file (training, and bundles of format 1); a bundle's
    tokenizer.json written from the same vocab loads as the identical ``TextTokenizer``."""

    def __init__(self, vocab_file: Path, vocab: dict[str, int], context_length: int) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 ([CLS] and [SEP]), got {context_length}")
        try:
            backend = chinese_clip_tokenizer(vocab)
        except ValueError as exc:
            raise ValueError(f"vocab file {vocab_file}: {exc}") from None
        super().__init__(backend, context_length=context_length, pad_id=PAD_ID, normalizer="cn-clip-bert")
        self.vocab_file = vocab_file

    @classmethod
    def from_vocab(
        cls, path: str | Path | None = None, context_length: int = DEFAULT_CONTEXT_LENGTH
    ) -> ChineseTokenizer:
        """Load a BERT vocab (one token a line; default: the shipped 21,128-token Chinese vocab)."""
        vocab_file = Path(path) if path is not None else DEFAULT_VOCAB
        if not vocab_file.is_file():
            raise FileNotFoundError(f"vocab file {vocab_file} does not exist; pass the bundle's vocab.txt")
        return cls(vocab_file, read_vocab(vocab_file), context_length)

    normalize = staticmethod(_CnClipBert.normalize)

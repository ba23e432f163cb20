"""A BERT WordPiece ``tokenizer.json`` (ALIGN's ``bert-base-uncased``) from a ``vocab.txt``.

The file reproduces Python's ``BertTokenizer`` (do_lower_case=True) with nothing but
``tokenizers.Tokenizer.from_file``, as the service loads it: ``BertNormalizer`` (clean text, space out CJK
characters, strip accents, lower-case), ``BertPreTokenizer``, ``WordPiece`` (greedy longest match, ``##``
continuations, [UNK] for words over 100 characters), ``[CLS] … [SEP]``, truncated to the context length
keeping [SEP]. Special tokens typed in the text ("[MASK]") are matched as Python matches them. No padding:
the service pads (id 0, [PAD]) to the length its engine needs; the attention mask hides it.

The Rust normaliser alone differs from Python on about 830,000 code points: its Unicode tables are not
Python's (it keeps unassigned code points and some newer combining marks that Python deletes, and misses
newer punctuation and CJK Extension E's U+2B820..U+2B91F), and it lower-cases a word-final capital sigma
to "σ" where Python's ``str.lower`` gives "ς". ``Replace`` normalisers in front of it close those gaps;
they are computed from the installed ``tokenizers`` and Python's ``unicodedata`` when the file is built,
so a file must be rebuilt (not copied) when either changes. tests/training/test_wordpiece.py checks the
ids against the Python tokenizer on generated text and on every code point.
"""

from __future__ import annotations

import sys
import unicodedata
from functools import cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from service.preprocessing.text import is_bert_cjk

CLS, SEP, UNK, PAD, MASK = "[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"
MAX_CHARS_PER_WORD = 100  # BertTokenizer's WordpieceTokenizer default

# Stand-ins for characters the Rust normaliser gets wrong: old (Unicode 1.1) symbols both sides classify
# alike, a word character; the first that no vocab token contains is used, so a word holding it is [UNK].
_STAND_INS = "\u2601\u2602\u2603\u2604\u2605\u2606"  # ☁☂☃☄★☆
# Python lower-cases word by word with str.lower(), whose final sigma rule Rust's char-wise mapping lacks;
# a capital sigma after a cased letter and before no cased letter (skipping case-ignorables) is final.
_FINAL_SIGMA = r"(?<=\p{Cased}|\p{Cased}\p{Case_Ignorable}|\p{Cased}\p{Case_Ignorable}{2})Σ(?!\p{Case_Ignorable}*\p{Cased})"


def load_vocab(vocab_file: str | Path) -> dict[str, int]:
    """One token a line, as Python's ``load_vocab``: only the newline is stripped; a repeat keeps its last id."""
    vocab: dict[str, int] = {}
    with Path(vocab_file).open(encoding="utf-8") as f:
        for index, line in enumerate(f):
            vocab[line.rstrip("\n")] = index
    return vocab


def wordpiece_tokenizer(
    vocab_file: str | Path, *, context_length: int = 64, lowercase: bool = True
) -> Tokenizer:
    """BERT WordPiece over ``vocab_file``: ``[CLS] ids[:context_length - 2] [SEP]``."""
    vocab = load_vocab(vocab_file)
    missing = [token for token in (CLS, SEP, UNK, PAD) if token not in vocab]
    if missing:
        raise ValueError(f"vocab file {vocab_file} lacks {', '.join(missing)}; is it a BERT WordPiece vocab?")
    if context_length < 2:
        raise ValueError(f"context_length must be at least 2 ([CLS] and [SEP]), got {context_length}")
    if not lowercase:
        raise ValueError(
            "only the uncased tokenizer is built (ALIGN's bert-base-uncased); pass lowercase=True"
        )
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, max_input_chars_per_word=MAX_CHARS_PER_WORD))
    tok.normalizer = normalizers.Sequence(
        [
            *_python_gap_rewrites(vocab),
            normalizers.Replace(Regex(_FINAL_SIGMA), "ς"),
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
            ),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([token for token in (PAD, UNK, CLS, SEP, MASK) if token in vocab])
    # the template's two tokens count toward max_length, so [SEP] survives truncation
    tok.enable_truncation(max_length=context_length)
    return tok


def _python_gap_rewrites(vocab: dict[str, int]) -> list[normalizers.Normalizer]:
    """``Replace`` normalisers, run before ``BertNormalizer``, that turn each character the Rust tables
    handle differently into what Python's tokenizer makes of it: nothing (unassigned code points, marks
    Python strips), a word of its own, or part of a word; a stand-in keeps the [UNK] where the result is
    not in the vocab."""
    stand_in = next((c for c in _STAND_INS if not any(c in token for token in vocab)), None)
    if stand_in is None:
        raise ValueError(f"every one of {_STAND_INS!r} occurs in the vocab; no stand-in is left for [UNK]")
    deleted, own_word, in_word = [], [], []
    literal: dict[str, str] = {}
    for char, words in _rust_python_gaps().items():
        if words == ("ab",):
            deleted.append(char)
        elif len(words) == 3 and words[0] == "a" and words[2] == "b":
            if words[1] in vocab:
                literal[char] = f" {words[1]} "
            else:
                own_word.append(char)
        elif len(words) == 1 and words[0].startswith("a") and words[0].endswith("b"):
            inner = words[0][1:-1]
            if any(inner in token for token in vocab):
                literal[char] = inner
            else:
                in_word.append(char)
        # other shapes (none in Unicode 14 against tokenizers 0.23) stay as Rust makes them
    rules = [(deleted, ""), (own_word, f" {stand_in} "), (in_word, stand_in)]
    out = [normalizers.Replace(Regex(_char_class(chars)), text) for chars, text in rules if chars]
    out += [normalizers.Replace(char, text) for char, text in literal.items()]
    return out


def _char_class(chars: list[str]) -> str:
    """A regex character class of ``chars`` as code point ranges."""
    points = sorted(ord(c) for c in chars)
    ranges: list[list[int]] = []
    for cp in points:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    body = "".join(f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges)
    return f"[{body}]"


@cache
def _rust_python_gaps() -> dict[str, tuple[str, ...]]:
    """{char: the words Python's BasicTokenizer makes of "a<char>b"} for every code point where the Rust
    normaliser + pre-tokenizer of the installed ``tokenizers`` make different words (about 3 s)."""
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    gaps = {}
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates cannot occur in UTF-8 text
            continue
        char = chr(cp)
        text = f"a{char}b"
        rust = tuple(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        category = unicodedata.category(char)
        # Python drops control, format, unassigned and private-use characters first: no need to run it
        dropped = (category[0] == "C" and char not in "\t\n\r") or char == "\ufffd"
        python = ("ab",) if dropped else tuple(_python_basic_words(text))
        if python != rust:
            gaps[char] = python
    return gaps


def _python_basic_words(text: str) -> list[str]:
    """Python ``BasicTokenizer(do_lower_case=True)``'s words (transformers), restated without transformers."""
    cleaned = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\x00\ufffd" or (category.startswith("C") and char not in "\t\n\r"):
            continue
        if char in " \t\n\r" or category == "Zs":
            cleaned.append(" ")
        elif is_bert_cjk(ord(char)):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    words = []
    for token in unicodedata.normalize("NFC", "".join(cleaned)).split():
        token = "".join(
            c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn"
        )
        word = ""
        for char in token:
            if _is_python_punctuation(char):
                words += [word, char] if word else [char]
                word = ""
            else:
                word += char
        if word:
            words.append(word)
    return " ".join(words).split()


def _is_python_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def write_wordpiece_tokenizer_json(
    vocab_file: str | Path, out: str | Path, *, context_length: int = 64, lowercase: bool = True
) -> Path:
    """Write the ``tokenizer.json`` of ``wordpiece_tokenizer`` to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wordpiece_tokenizer(vocab_file, context_length=context_length, lowercase=lowercase).save(str(out))
    return out

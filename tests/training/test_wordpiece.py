"""ALIGN's WordPiece tokenizer.json, loaded as the service loads it, gives the ids of Python's BertTokenizer.

The reference is the pure-Python tokenizer: ``BertTokenizerLegacy`` in transformers 5 (where
``BertTokenizer`` itself is backed by the Rust library under test), ``BertTokenizer`` in 4.x. The vocab is
written here (no downloads): special tokens, ASCII and full-width characters, CJK characters (some
missing, to reach [UNK]), words and ``##`` pieces.
"""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from training.tokenizers.wordpiece import write_wordpiece_tokenizer_json

CONTEXT = 64
STRINGS = 6000
_UNICODE_GAPS = (
    "\u0378\u07fd\u061d\u1734\u166d\u2e55\u2e5d\ufa6e\u1c89\U00011938\U000111c9\U0002b820\U0002b8ff\U000e0080"
)
_SYLLABLES = [
    "an",
    "ing",
    "er",
    "pho",
    "to",
    "cat",
    "dog",
    "re",
    "un",
    "able",
    "s",
    "ed",
    "ch",
    "ou",
    "tion",
    "x",
]


def _python_tokenizer(vocab_file: Path) -> object:
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as Slow
    except ImportError:  # transformers 4: BertTokenizer is the Python one
        from transformers import BertTokenizer as Slow
    return Slow(str(vocab_file), do_lower_case=True)


def _vocab() -> list[str]:
    rng = random.Random(0)
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(20)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127)]  # ASCII punctuation, digits, letters (upper-case ones unused)
    chars += [chr(c) for c in range(0xFF01, 0xFF5F) if c % 3]  # most full-width forms
    chars += [chr(0x4E00 + i) for i in range(0, 3000, 2)]  # every other CJK character of a range
    chars += list("。，、；：？！“”‘’《》（）【】…—·αβγδσςπ¿¡éß")
    tokens += chars + ["##" + c for c in chars if c.isalnum()]
    words = {"".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(900)}
    tokens += sorted(words) + sorted("##" + w for w in list(words)[:600])
    tokens += ["the", "photo", "of", "a", "red", "dress", "café", "naïve", "1", "##2", "##0", "2024"]
    return list(dict.fromkeys(tokens))


def _random_text(rng: random.Random, words: list[str]) -> str:
    pieces = {
        "chinese": lambda: "".join(chr(0x4E00 + rng.randrange(3200)) for _ in range(rng.randint(1, 12))),
        "english": lambda: " ".join(rng.choice(words) for _ in range(rng.randint(1, 6))),
        "caps": lambda: rng.choice(words).upper() + rng.choice(["", "S", "ING"]),
        "digits": lambda: str(rng.randrange(10 ** rng.randint(1, 12))),
        "fullwidth": lambda: "".join(chr(rng.randrange(0xFF01, 0xFF5F)) for _ in range(rng.randint(1, 6))),
        "punct": lambda: "".join(
            rng.choice("。，、；：？！“”‘’《》（）【】…—·!?.,;:'\"()[]{}<>@#$%^&*-_=+/\\|~`")
            for _ in range(rng.randint(1, 4))
        ),
        "emoji": lambda: "".join(rng.choice("😀🐱🐶❤️👍🏽🇨🇳✨🔥☕⭐") for _ in range(rng.randint(1, 3))),
        "space": lambda: "".join(
            rng.choice(" \t\n\r\u3000\xa0\u2003\u2028") for _ in range(rng.randint(1, 5))
        ),
        "control": lambda: "".join(
            rng.choice("\x00\x07\x1b\x7f\u200b\u200d\ufeff\ufffd\x85\x0b\x0c")
            for _ in range(rng.randint(1, 3))
        ),
        "accents": lambda: rng.choice(
            [
                "Café",
                "naïve",
                "résumé",
                "Ñandú",
                "über",
                "ÉCOLE",
                "Ångström",
                "cafe\u0301",
                "İstanbul",
                "Straße",
                "ﬁne",
                "Ⅻ",
                "ｱｲｳ",
            ]
        ),
        "special": lambda: rng.choice(["[MASK]", "[SEP]", "[cls]", "[UNK]x", "[PAD]"]),
        "long": lambda: " ".join(rng.choice(words) for _ in range(rng.randint(40, 90))),
        "greek": lambda: rng.choice(["ΑΣ", "σοφία", "ΟΔΟΣ.", "Σίσυφος"]),
        "other": lambda: rng.choice(
            ["かな", "カタカナ", "한국어", "ไทย", "עברית", "Привет", "①②", "㈱", "\U0002b820"]
        ),
    }
    kinds = list(pieces)
    return rng.choice(["", " ", "  "]).join(pieces[rng.choice(kinds)]() for _ in range(rng.randint(1, 6)))


def generated_strings(n: int, vocab: list[str]) -> list[str]:
    rng = random.Random(13)
    words = [t for t in vocab if t.isascii() and t.isalpha() and len(t) > 1 and not t.startswith("[")]
    return [_random_text(rng, words) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizers_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, object, list[str]]:
    directory = tmp_path_factory.mktemp("wordpiece")
    vocab = _vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    path = write_wordpiece_tokenizer_json(
        directory / "vocab.txt", directory / "tokenizer.json", context_length=CONTEXT
    )
    return Tokenizer.from_file(str(path)), _python_tokenizer(directory / "vocab.txt"), vocab


def _python_ids(slow: object, text: str) -> list[int]:
    return slow(text, truncation=True, max_length=CONTEXT)["input_ids"]  # type: ignore[operator]


def test_ids_equal_python_on_generated_strings(tokenizers_pair: tuple[Tokenizer, object, list[str]]) -> None:
    fast, slow, vocab = tokenizers_pair
    texts = generated_strings(STRINGS, vocab)
    ours = [e.ids for e in fast.encode_batch(texts)]
    differing = [(t, o) for t, o in zip(texts, ours, strict=True) if o != _python_ids(slow, t)]
    assert not differing, f"{len(differing)} of {len(texts)} differ, e.g. {differing[0][0]!r}"
    assert sum(len(ids) == CONTEXT for ids in ours) > 200  # truncation was exercised
    assert sum(fast.token_to_id("[UNK]") in ids for ids in ours) > 1000  # so was [UNK]


def test_truncation_keeps_cls_and_sep_and_nothing_pads(
    tokenizers_pair: tuple[Tokenizer, object, list[str]],
) -> None:
    fast, slow, _ = tokenizers_pair
    long = fast.encode("the photo of a red dress " * 40).ids
    assert (
        len(long) == CONTEXT
        and long[0] == fast.token_to_id("[CLS]")
        and long[-1] == fast.token_to_id("[SEP]")
    )
    assert (
        fast.encode("").ids == [fast.token_to_id("[CLS]"), fast.token_to_id("[SEP]")] == _python_ids(slow, "")
    )
    assert len(fast.encode("photo").ids) == 3


@pytest.mark.slow
def test_every_code_point_matches_python(tokenizers_pair: tuple[Tokenizer, object, list[str]]) -> None:
    """Each code point, alone, inside a word, and after a capital sigma — but of the unassigned and
    private-use ones (~970k, handled alike, most of the run time) only every 64th."""
    fast, slow, _ = tokenizers_pair
    differing = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or (cp % 64 and unicodedata.category(chr(cp)) in ("Cn", "Co")):
            continue
        char = chr(cp)
        for text in (char, f"a{char}b", f"Σ{char}"):
            expected = slow.convert_tokens_to_ids(slow.tokenize(text))  # type: ignore[attr-defined]
            if fast.encode(text, add_special_tokens=False).ids != expected:
                differing.append(f"U+{cp:04X} in {text!r}")
                break
    assert not differing, f"{len(differing)} code points differ: {', '.join(differing[:10])}"

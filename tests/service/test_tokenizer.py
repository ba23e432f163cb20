"""The tokenizer against the official ``cn_clip.clip.tokenize()``.

The official ``FullTokenizer`` is loaded straight from its file in the installed ``cn-clip`` package
(``bert_tokenizer.py`` needs only the standard library and six), so these tests do not depend on the
torchvision workaround; ``test_official_formula_is_cn_clip_tokenize`` checks the 3-line ``tokenize()``
wrapper against the real one when ``cn_clip.clip`` can be imported.

Ours is the path a bundle takes: the ``tokenizer.json`` that export writes from vocab.txt, loaded by the
generic ``TextTokenizer`` with the ``cn-clip-bert`` pre-step.
"""

from __future__ import annotations

import importlib.util
import random
import types
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from service.preprocessing.text import (
    DEFAULT_VOCAB,
    ChineseTokenizer,
    TextTokenizer,
    chinese_clip_tokenizer,
    read_vocab,
)

N_GENERATED = 6000

_PIECES = {
    "chinese": lambda r: "".join(chr(r.randint(0x4E00, 0x9FA5)) for _ in range(r.randint(1, 8))),
    "rare_cjk": lambda r: chr(
        r.choice([0x3400, 0x20000, 0x2A700, 0x2B740, 0x2B820, 0x2B900, 0x2CEA0, 0xF900, 0x2F800])
        + r.randint(0, 20)
    ),
    "english": lambda r: r.choice(
        ["Hello", "WORLD", "unaffable", "running", "CLIP", "iPhone", "tuwen", "don't"]
    ),
    "digits": lambda r: str(r.randint(0, 10 ** r.randint(1, 12))),
    "full_width": lambda r: "".join(chr(r.randint(0xFF01, 0xFF5E)) for _ in range(r.randint(1, 4))),
    "punctuation": lambda r: r.choice(
        "!?,.;:'\"()[]{}<>@#$%^&*-_=+/\\|~`，。！？；：、（）【】《》「」…—·“”‘’"
    ),
    "emoji": lambda r: r.choice(["🔥", "😂", "👍", "🥰", "🫠", "👨‍👩‍👧", "🇨🇳", "❤️", "☕", "✨", "🧑🏽‍💻"]),
    "whitespace": lambda r: r.choice(
        [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\xa0", "\u2028", "\u2009", "\x0b", "\x0c"]
    ),
    "control": lambda r: r.choice(
        [
            "\x00",
            "\x01",
            "\x1f",
            "\x7f",
            "\x85",
            "\u200b",
            "\u200d",
            "\ufeff",
            "\u00ad",
            "\ufffd",
            "\u180e",
            "\u2066",
            "\U000e0001",
        ]
    ),
    "accents": lambda r: r.choice(
        [
            "café",
            "naïve",
            "Ångström",
            "e\u0301",
            "İstanbul",
            "ǅ",
            "ﬁ",
            "Straße",
            "ΟΔΟΣ",
            "ΣΑΣ.",
            "\u0301",
            "\u0890",
            "\u1abf",
            "Ꭰ",
            "ꭰ",
        ]
    ),
    "private_use": lambda r: chr(r.choice([0xE000, 0xF8FF, 0xF0000, 0x10FFFD]) + r.randint(0, 1)),
    "surrogate": lambda r: chr(r.randint(0xD800, 0xDFFF)),
    "any_code_point": lambda r: chr(r.randint(0, 0x10FFFF)),
    "long": lambda r: "很长的句子" * r.randint(10, 40) + "long english text " * r.randint(0, 10),
}


def generated_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = list(_PIECES)
    texts = []
    for i in range(n):
        focus = kinds[i % len(kinds)]  # every kind appears in every 14 strings
        parts = [_PIECES[focus](rng)] + [_PIECES[rng.choice(kinds)](rng) for _ in range(rng.randint(0, 6))]
        rng.shuffle(parts)
        texts.append("".join(parts))
    return texts


class OfficialTokenize:
    """``cn_clip.clip.utils.tokenize`` over the official ``FullTokenizer``: ``[CLS] + ids[:L-2] + [SEP]``, 0-padded."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("cn_clip")
        assert spec is not None and spec.submodule_search_locations, (
            "cn-clip (the official package) is not installed"
        )
        self.clip_dir = Path(spec.submodule_search_locations[0]) / "clip"
        module_spec = importlib.util.spec_from_file_location(
            "official_bert_tokenizer", self.clip_dir / "bert_tokenizer.py"
        )
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        self.full = module.FullTokenizer(str(self.clip_dir / "vocab.txt"))

    def tokenize(self, texts: list[str], context_length: int = 52) -> np.ndarray:
        vocab = self.full.vocab
        result = np.zeros((len(texts), context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = self.full.convert_tokens_to_ids(self.full.tokenize(text))[: context_length - 2]
            tokens = [vocab["[CLS]"], *ids, vocab["[SEP]"]]
            result[i, : len(tokens)] = tokens
        return result


@pytest.fixture(scope="module")
def official() -> OfficialTokenize:
    return OfficialTokenize()


def _import_cn_clip() -> types.ModuleType:
    try:
        from peers import import_cn_clip

        return import_cn_clip()
    except ImportError as e:  # torchvision (needed only to import cn_clip.clip) is missing
        pytest.skip(f"cn_clip.clip cannot be imported here: {e}")


def test_official_formula_is_cn_clip_tokenize(official) -> None:
    cn_clip = _import_cn_clip()
    texts = generated_texts(300, seed=7)
    assert (cn_clip.tokenize(texts).numpy() == official.tokenize(texts)).all()


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenizer.json as `tuwen export` writes it for Chinese-CLIP."""
    path = tmp_path_factory.mktemp("bundle") / "tokenizer.json"
    chinese_clip_tokenizer(read_vocab(DEFAULT_VOCAB)).save(str(path))
    return path


def from_json(path: Path, context_length: int = 52) -> TextTokenizer:
    return TextTokenizer.from_file(path, context_length=context_length, pad_id=0, normalizer="cn-clip-bert")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_json: Path) -> TextTokenizer:
    return from_json(tokenizer_json)


def test_vocab_is_the_official_one(official) -> None:
    official_vocab = official.clip_dir / "vocab.txt"
    assert DEFAULT_VOCAB.read_bytes() == official_vocab.read_bytes()
    assert DEFAULT_VOCAB.read_bytes().count(b"\n") == 21128


@pytest.mark.parametrize("context_length", [52, 24])
def test_ids_identical_to_official_tokenize(official, tokenizer_json, context_length: int) -> None:
    texts = generated_texts(N_GENERATED, seed=context_length)
    tokenizer = from_json(tokenizer_json, context_length)
    ours = tokenizer.tokenize(texts)
    theirs = official.tokenize(texts, context_length=context_length)
    assert ours.dtype == np.int64 and ours.shape == (N_GENERATED, context_length)
    mismatched = [texts[i] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert not mismatched, f"{len(mismatched)} texts differ, e.g. {mismatched[:3]!r}"
    assert (theirs[:, -1] != 0).any(), "no generated text reached the context length"


def test_every_code_point_in_context_matches_official(official, tokenizer) -> None:
    """Unicode-table differences between Rust and Python hide in single code points: try each one."""
    rng = random.Random(1)
    # All of the BMP's non-CJK blocks would take a while: every non-CJK, non-Hangul BMP code point once.
    cps = [cp for cp in range(0x10000) if not (0x4E00 <= cp <= 0x9FFF or 0xAC00 <= cp <= 0xD7A3)]
    cps += rng.sample(range(0x10000, 0x110000), 5000)
    texts = [f"a{chr(cp)}b Σ{chr(cp)}" for cp in cps]
    ours = tokenizer.tokenize(texts)
    theirs = official.tokenize(texts)
    bad = [hex(cps[i]) for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert not bad, f"code points that differ: {bad[:20]}"


def test_tokenize_does_not_normalise_but_encode_does(official, tokenizer) -> None:
    text = "“UPPER” Quotes"
    assert tokenizer.tokenize([text]).tolist() == official.tokenize([text]).tolist()
    unk = tokenizer.vocab["[UNK]"]
    assert unk in tokenizer.tokenize(text)[0]  # curly quotes are [UNK] through the public tokenize()
    normalised = tokenizer.encode(text)[0]
    assert unk not in normalised
    assert normalised == tokenizer.encode(['"upper" quotes'], normalize=False)[0]
    assert ChineseTokenizer.normalize("“A”") == '"a"'


def test_vocab_path_equals_the_tokenizer_json_path(tokenizer) -> None:
    """Training (and format-1 bundles) build the tokenizer from vocab.txt; bundles load tokenizer.json."""
    texts = generated_texts(500, seed=3)
    for normalize in (True, False):
        assert ChineseTokenizer.from_vocab().encode(texts, normalize) == tokenizer.encode(texts, normalize)


def test_generic_tokenizer_truncates_keeping_specials_and_pads_with_pad_id(tmp_path) -> None:
    """Another family's file (no pre-step, pad id 1 as XLM-R): the post-processor's tokens survive truncation."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "B": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    backend.save(str(tmp_path / "tokenizer.json"))
    tok = TextTokenizer.from_file(tmp_path / "tokenizer.json", context_length=5, pad_id=1)
    assert tok.encode(["a B a B a B", "B", "b"]) == [[0, 4, 5, 4, 2], [0, 5, 2], [0, 3, 2]]  # no lower-casing
    ids, mask = tok.pad(tok.encode(["a", "a B a"]))
    assert ids.tolist() == [[0, 4, 2, 1, 1], [0, 4, 5, 4, 2]] and mask.tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    with pytest.raises(ValueError, match="exceed the 2 special tokens"):
        TextTokenizer.from_file(tmp_path / "tokenizer.json", context_length=2, pad_id=1)
    with pytest.raises(ValueError, match="unknown text normalizer 'nfkc'"):
        TextTokenizer.from_file(tmp_path / "tokenizer.json", context_length=5, pad_id=1, normalizer="nfkc")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizers file"):
        TextTokenizer.from_file(tmp_path / "bad.json", context_length=5, pad_id=1)
    with pytest.raises(FileNotFoundError, match=r"tokenizer\.json"):
        TextTokenizer.from_file(tmp_path / "missing.json", context_length=5, pad_id=1)


def test_encode_is_unpadded_and_truncated(tokenizer) -> None:
    short, long = tokenizer.encode(["红色的圆形", "长" * 100])
    assert short == [101, *[tokenizer.vocab[c] for c in "红色的圆形"], 102]
    assert len(long) == 52 and long[0] == 101 and long[-1] == 102
    assert tokenizer.encode("") == [[101, 102]]


def test_pad(tokenizer) -> None:
    encoded = tokenizer.encode(["猫", "一只黑色的猫"])
    ids, mask = tokenizer.pad(encoded)
    assert ids.shape == mask.shape == (2, 8) and ids.dtype == mask.dtype == np.int64
    assert ids[0].tolist() == [*encoded[0], 0, 0, 0, 0, 0]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8]
    assert (mask == (ids != 0)).all()
    assert tokenizer.pad(encoded, length=10)[0].shape == (2, 10)
    with pytest.raises(ValueError, match="longest"):
        tokenizer.pad(encoded, length=3)


def test_wrong_vocab_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="vocab"):
        ChineseTokenizer.from_vocab(tmp_path / "missing.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        ChineseTokenizer.from_vocab(bad)


def test_generator_covers_what_it_claims() -> None:
    texts = generated_texts(200)
    joined = "".join(texts)
    assert any(unicodedata.category(c) == "Cs" for c in joined)
    assert any(unicodedata.category(c) == "Co" for c in joined)
    assert "\t" in joined and "\x00" in joined

"""The XLM-R ``tokenizer.json`` made from a SentencePiece model gives SentencePiece's ids (XLM-R layout).

A Unigram model is trained here on generated text (no downloads). References: SentencePiece itself, and the
slow ``XLMRobertaTokenizer`` of transformers 4 (pieces -> ``PieceToId`` + 1, ``<unk>`` -> 3, ``<s> … </s>``,
truncation keeping the first ``context - 2`` pieces), written out below because transformers 5 has no slow
class: its ``XLMRobertaTokenizer`` is itself a ``tokenizers`` conversion, compared here for information.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from tests.training.tokenizer_text import sample_strings, training_corpus
from training.tokenizers import xlmr_tokenizer_json

spm = pytest.importorskip("sentencepiece")
tokenizers = pytest.importorskip("tokenizers")

CONTEXT = 77
STRINGS = 5000
# the cases where a plain conversion goes wrong, each on its own
TARGETED = [
    "",
    " ",
    "   ",
    "a   b",
    "  leading and trailing  ",
    "a\tb\nc\r\nd\u3000e\xa0f\u2003g\u2028h\x85i\u200bj",
    "½\u200d乫",  # a mapped character then ZWJ: one short grapheme cluster
    "\xa0\u200d侌",
    "ｶﾞｷﾞｸﾞﾊﾟﾋﾟ",  # half-width katakana with (semi-)voiced marks
    "カ\u3099キ\u3099",  # decomposed kana
    "ｅ\u0301 A\u0302\u0300 e\u0301",  # accents on full-width / plain letters, decomposed
    "\u1100\u1161\u11a8",  # Hangul jamo
    "❤️👍🏽👨‍👩‍👧🇨🇳",
    "２０２４年１月，“高级感”！",
    "很长的描述" * 40,
    "x" * 200,
]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus(seed=0, lines=20000)),
        model_writer=buffer,
        vocab_size=3000,
        model_type="unigram",
        character_coverage=0.9995,  # rare CJK characters stay unknown, as in XLM-R
        num_threads=1,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("spm") / "sentencepiece.bpe.model"  # XLM-R's file name
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def tokenizer(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    path = xlmr_tokenizer_json(model_file, tmp_path_factory.mktemp("json") / "tokenizer.json", CONTEXT)
    return tokenizers.Tokenizer.from_file(str(path))  # as the service loads it


def sentencepiece_ids(sp: object, text: str) -> list[int]:
    ids = [3 if i == 0 else i + 1 for i in sp.encode(text)]  # type: ignore[attr-defined]
    return [0, *ids[: CONTEXT - 2], 2]


def slow_xlmr_ids(sp: object, text: str) -> list[int]:
    """transformers 4's slow ``XLMRobertaTokenizer(vocab_file=…)(text, truncation=True, max_length=77)``."""
    pieces = sp.encode(text, out_type=str)  # type: ignore[attr-defined]
    ids = []
    for piece in pieces:
        spm_id = sp.PieceToId(piece)  # type: ignore[attr-defined]
        ids.append(spm_id + 1 if spm_id else 3)  # fairseq offset; SentencePiece's <unk> (0) -> 3
    return [0, *ids[: CONTEXT - 2], 2]


def _disagreements(encode: object, reference: object, texts: list[str]) -> list[str]:
    return [text for text in texts if encode(text) != reference(text)]  # type: ignore[operator]


def test_ids_equal_sentencepiece_and_the_slow_tokenizer(model_file: Path, tokenizer: object) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    texts = sample_strings(seed=1, count=STRINGS) + TARGETED
    ours = lambda text: tokenizer.encode(text).ids  # type: ignore[attr-defined]  # noqa: E731
    versus_sp = _disagreements(ours, lambda text: sentencepiece_ids(sp, text), texts)
    versus_slow = _disagreements(ours, lambda text: slow_xlmr_ids(sp, text), texts)
    print(
        f"{len(texts)} strings: {len(versus_sp)} differ from SentencePiece, {len(versus_slow)} from the slow tokenizer"
    )
    assert not versus_sp, [ascii(text)[:120] for text in versus_sp[:5]]
    assert not versus_slow, [ascii(text)[:120] for text in versus_slow[:5]]
    lengths = [len(ours(text)) for text in texts]
    assert max(lengths) == CONTEXT and min(lengths) == 2  # truncated with </s> kept; "" is <s></s>


def test_stock_transformers_conversion_differs(model_file: Path) -> None:
    """For information: how often transformers' own XLM-R conversion disagrees with SentencePiece."""
    transformers = pytest.importorskip("transformers")
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    stock = transformers.XLMRobertaTokenizer.from_pretrained(str(model_file.parent))
    texts = sample_strings(seed=1, count=STRINGS) + TARGETED
    encode = lambda text: stock(text, truncation=True, max_length=CONTEXT)["input_ids"]  # noqa: E731
    differ = _disagreements(encode, lambda text: sentencepiece_ids(sp, text), texts)
    print(
        f"transformers {transformers.__version__} XLMRobertaTokenizer: {len(differ)} of {len(texts)} differ"
    )
    assert encode("北京 a dog") == sentencepiece_ids(sp, "北京 a dog")  # same vocabulary and layout


def test_layout(model_file: Path, tokenizer: object) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    assert [vocab[token] for token in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    # SentencePiece's 3 reserved pieces become 4 specials, then <mask>: one more id than SentencePiece + 1
    assert vocab["<mask>"] == sp.get_piece_size() + 1 == tokenizer.get_vocab_size() - 1  # type: ignore[attr-defined]
    piece = sp.id_to_piece(100)
    assert vocab[piece] == 101


def test_bpe_models_are_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus(seed=2, lines=500)),
        model_writer=buffer,
        vocab_size=1000,
        model_type="bpe",
        character_coverage=0.98,
        minloglevel=2,
    )
    (tmp_path / "bpe.model").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="not a Unigram SentencePiece model"):
        xlmr_tokenizer_json(tmp_path / "bpe.model", tmp_path / "tokenizer.json")

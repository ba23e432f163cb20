"""Generated multilingual text for tokenizer tests: no downloads, deterministic per seed."""

from __future__ import annotations

import random

# the common CJK range, kana (full- and half-width), Hangul, Latin, digits, punctuation and symbols of every width
_CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
_WORDS_ZH = [
    "一只",
    "小狗",
    "草地",
    "奔跑",
    "北京",
    "故宫",
    "雪景",
    "连衣裙",
    "高级感",
    "托特包",
    "斜挎",
    "图片",
    "搜索",
]
_WORDS_EN = [
    "the",
    "cat",
    "red",
    "dress",
    "photo",
    "of",
    "a",
    "Running",
    "dog",
    "on",
    "grass",
    "Beijing",
    "SNOW",
]
_ACCENTED = ["café", "naïve", "Ångström", "résumé", "ﬁne", "e\u0301", "Å", "ǅ", "Straße", "ÿ", "œuvre"]
_DIGITS = ["2024年1月", "3.14", "1,000", "０１２３", "Ⅻ", "½", "①", "x²", "10%"]
_PUNCT = list("，。！？；：“”‘’（）【】《》、…—·～") + list(",.!?;:\"'()[]{}<>-_/\\@#$%^&*+=|~`")
_FULLWIDTH = [chr(c) for c in range(0xFF01, 0xFF5F)]  # ！ … ～, full-width ASCII
_HALFWIDTH_KANA = [chr(c) for c in range(0xFF61, 0xFF9F)]  # ｡ … ﾞ
_KANA = list("あいうえおかきくけこアイウエオガギグゲゴ")
_HANGUL = list("한국어가나다라마")
_EMOJI = ["😀", "🐱", "👍🏽", "🇨🇳", "👨‍👩‍👧", "❤️", "🀄", "☕"]
_SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2003", "\u200b", " \t ", "\u2028"]
_CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\ufeff", "\u200d", "\u202e", "\ufffd"]
_PARTS = [
    (_WORDS_ZH, 8),
    (_CJK, 8),
    (_WORDS_EN, 6),
    (_ACCENTED, 2),
    (_DIGITS, 3),
    (_PUNCT, 4),
    (_FULLWIDTH, 2),
    (_HALFWIDTH_KANA, 1),
    (_KANA, 1),
    (_HANGUL, 1),
    (_EMOJI, 2),
    (_SPACES, 4),
    (_CONTROL, 1),
]


def generated_text(rng: random.Random, max_parts: int = 30) -> str:
    pools, weights = zip(*_PARTS, strict=True)
    parts = rng.choices(pools, weights=weights, k=rng.randint(0, max_parts))
    return "".join(rng.choice(pool) for pool in parts)


def training_corpus(seed: int, lines: int) -> list[str]:
    """Lines in which the common pieces recur, so a Unigram model learns words, not only characters."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(lines):
        words = rng.choices(_WORDS_ZH + _WORDS_EN + _DIGITS + _KANA, k=rng.randint(3, 12))
        noise = generated_text(rng, 6)
        sentences.append(" ".join(words) + noise)
    return sentences


def sample_strings(seed: int, count: int, long_every: int = 50) -> list[str]:
    """``count`` strings; every ``long_every``-th is far longer than a 77-token context."""
    rng = random.Random(seed)
    return [generated_text(rng, 400 if i % long_every == 0 else 30) for i in range(count)]

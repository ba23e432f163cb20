"""XLM-R's SentencePiece model as a Hugging Face ``tokenizer.json`` the service loads without torch.

Ids follow XLM-R (fairseq): ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, SentencePiece's pieces from its
id 3 on shifted up by one, ``<mask>`` last. ``<s> … </s>`` and truncation to the context length are in the file.

Built to give SentencePiece's own ids, where the stock conversion (``transformers``' ``XLMRobertaConverter``,
the layout of BAAI/AltCLIP's ``tokenizer.json``) does not:

- whitespace: the stock file pre-tokenizes with ``WhitespaceSplit`` + ``Metaspace``, which splits at every
  Unicode whitespace and drops it; SentencePiece only strips and collapses U+0020 (after its charsmap has
  mapped other spaces) and keeps the rest. Here the model's ``normalizer_spec`` is followed in SentencePiece's
  order (charsmap, strip/collapse spaces, dummy prefix, ``▁`` escaping) and there is no pre-tokenizer: Unigram
  runs over the whole sentence, as in SentencePiece.
- grapheme clusters: ``tokenizers``' ``Precompiled`` looks a short grapheme cluster up as a whole and keeps
  only the mapping of its *shortest* matching prefix, dropping the rest ("½" + ZWJ -> "1⁄2"; "ｶﾞ" -> "カ" +
  U+3099 instead of "ガ"); SentencePiece matches the longest prefix and continues after it. Here a control
  character that the charsmap deletes is put after every character, so ``Precompiled`` maps one character at
  a time, and NFC afterwards recomposes what SentencePiece's multi-character entries compose (kana with
  voiced marks, Latin letters with accents, Hangul jamo). NFKC-family charsmaps only (XLM-R's is nmt_nfkc).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, processors
from tokenizers.models import Unigram

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's ids 0-3
MASK = "<mask>"
_SPM_UNIGRAM = 1
_NFKC_RULES = ("nmt_nfkc", "nfkc")  # and their _cf (case-folding) variants
_BREAK = "\x01"  # deleted by NFKC-family charsmaps
# SentencePiece's reserved pieces at ids 0-2, replaced by SPECIALS
_SPM_RESERVED = ("<unk>", "<s>", "</s>")


def xlmr_tokenizer(sentencepiece_model: str | Path, context_length: int) -> Tokenizer:
    """The XLM-R tokenizer of a SentencePiece Unigram ``.model`` (``sentencepiece.bpe.model`` is one)."""
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf; only the conversion does

    proto = sentencepiece_model_pb2.ModelProto.FromString(Path(sentencepiece_model).read_bytes())
    if proto.trainer_spec.model_type != _SPM_UNIGRAM:
        raise ValueError(
            f"{sentencepiece_model} is not a Unigram SentencePiece model (model_type {proto.trainer_spec.model_type}); "
            "XLM-R's tokenizer is Unigram"
        )
    reserved = tuple(piece.piece for piece in proto.pieces[:3])
    if reserved != _SPM_RESERVED:
        raise ValueError(
            f"{sentencepiece_model} starts with pieces {reserved}, not {_SPM_RESERVED}; "
            "the XLM-R id layout (fairseq offset of one) assumes SentencePiece's default reserved ids"
        )
    if proto.trainer_spec.byte_fallback:
        raise ValueError(f"{sentencepiece_model} uses byte fallback, which XLM-R's tokenizer does not")

    vocab = [(token, 0.0) for token in SPECIALS]
    vocab += [(piece.piece, piece.score) for piece in proto.pieces[3:]]
    vocab.append((MASK, 0.0))
    tokenizer = Tokenizer(Unigram(vocab, unk_id=SPECIALS.index("<unk>"), byte_fallback=False))

    spec = proto.normalizer_spec
    steps: list[normalizers.Normalizer] = []
    if spec.precompiled_charsmap:
        steps += _charsmap_steps(spec.name, spec.precompiled_charsmap, str(sentencepiece_model))
    if spec.remove_extra_whitespaces:
        # SentencePiece counts only U+0020 as extra whitespace (after its charsmap has mapped the others)
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Replace(Regex(r"\A(?=.)"), " "))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    # no pre-tokenizer: SentencePiece runs Viterbi over the whole normalised sentence, and so does this
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")

    bos, eos = SPECIALS[0], SPECIALS[2]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, 0), (eos, 2)],
    )
    tokenizer.add_special_tokens([*SPECIALS, MASK])
    tokenizer.enable_truncation(max_length=context_length)
    return tokenizer


def _charsmap_steps(rule: str, charsmap: bytes, source: str) -> list[normalizers.Normalizer]:
    """SentencePiece's charsmap, applied one character at a time, then recomposed (see the module docstring)."""
    precompiled = normalizers.Precompiled(charsmap)
    if not rule.startswith(_NFKC_RULES):
        return [precompiled]  # e.g. a user-defined rule: NFC would not be what SentencePiece does
    if precompiled.normalize_str(_BREAK) != "":
        raise ValueError(
            f"{source}: its {rule!r} charsmap keeps U+0001, which the grapheme fix relies on it deleting; "
            "convert this model with the plain Precompiled normalizer instead"
        )
    # a control character is a grapheme boundary on both sides (UAX #29 GB4/GB5)
    return [normalizers.Replace(Regex(r"(?<=[\s\S])"), _BREAK), precompiled, normalizers.NFC()]


def xlmr_tokenizer_json(sentencepiece_model: str | Path, out: str | Path, context_length: int = 77) -> Path:
    """Write ``xlmr_tokenizer(sentencepiece_model, context_length)`` to ``out`` (a ``tokenizer.json``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    xlmr_tokenizer(sentencepiece_model, context_length).save(str(out))
    return out

"""Check exported graphs against a reference on sample inputs; the figures go into the bundle manifest.

Every graph is run on the same sample inputs as its reference (PyTorch fp32 at export time, ONNX
Runtime fp32 when TensorRT engines are built), and the worst row decides: a single bad shape fails.
Torch-free (numpy, ONNX Runtime), so that `tuwen build-engines` runs where training is not installed;
training's exporter imports it from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from service.bundle import Verification

if TYPE_CHECKING:
    import onnxruntime as ort

    from service.preprocessing.text import TextTokenizer

CLS_ID, SEP_ID, FIRST_WORD_ID = 101, 102, 672  # ids below 672 are special tokens and punctuation

Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TokenLayout:
    """The ids sample texts are made of: ``bos`` random words ``eos``, right-padded with ``pad``; words are
    drawn from ``first_word`` up to the model's vocab size. The default is Chinese-CLIP's BERT vocab; the
    exporter derives each family's from its tokenizer (XLM-R: ``<s>``=0, ``</s>``=2, ``<pad>``=1)."""

    bos: int = CLS_ID
    eos: int = SEP_ID
    pad: int = 0
    first_word: int = FIRST_WORD_ID


BERT_LAYOUT = TokenLayout()


def token_layout(tokenizer: TextTokenizer) -> TokenLayout:
    """The layout of a family's tokenizer: its start and end tokens (what it adds to an empty text), its pad
    id, and words from the first id above those."""
    specials = tokenizer.encode("", normalize=False)[0]
    if len(specials) != 2:
        raise ValueError(
            f"the tokenizer turns an empty text into {specials}; sample texts need a start and an end token"
            " (a post-processor template such as `<s> $A </s>`)"
        )
    bos, eos = specials
    return TokenLayout(bos=bos, eos=eos, pad=tokenizer.pad_id, first_word=max(bos, eos, tokenizer.pad_id) + 1)


class VerificationFailed(Exception):
    """An exported graph disagrees with its reference by more than its threshold."""


@dataclass(frozen=True)
class Case:
    name: str
    feeds: Feeds


def image_cases(resolution: int, batches: Sequence[int] = (1, 7), seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [
        Case(
            f"image batch {n}",
            {"pixel_values": rng.standard_normal((n, 3, resolution, resolution), np.float32)},
        )
        for n in batches
    ]


def random_token_ids(
    rng: np.random.Generator, length: int, vocab_size: int, layout: TokenLayout = BERT_LAYOUT
) -> list[int]:
    """``bos`` words ``eos`` of exactly ``length`` tokens (length 1 is a lone ``bos``)."""
    if layout.first_word >= vocab_size:
        raise ValueError(
            f"no word ids: the first word id {layout.first_word} is not below vocab size {vocab_size}"
        )
    if length == 1:
        return [layout.bos]
    return [layout.bos, *rng.integers(layout.first_word, vocab_size, length - 2).tolist(), layout.eos]


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``rows`` with ``pad_id``; the mask comes from the lengths (XLM-R's ``<s>`` is id 0)."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def text_cases(
    context_length: int,
    vocab_size: int,
    batches: Sequence[int] = (1, 7),
    lengths: Sequence[int] = (1, 5, 52),
    seed: int = 0,
    layout: TokenLayout = BERT_LAYOUT,
) -> list[Case]:
    rng = np.random.default_rng(seed)

    def rows(n: int, length: int) -> list[list[int]]:
        return [random_token_ids(rng, length, vocab_size, layout) for _ in range(n)]

    cases = []
    for n in batches:
        for length in (min(length, context_length) for length in lengths):
            ids, mask = pad_ids(rows(n, length), layout.pad)
            cases.append(Case(f"text batch {n} length {length}", {"input_ids": ids, "attention_mask": mask}))
    # a batch of different lengths padded to the longest: padding must not change any row
    mixed = [
        random_token_ids(rng, int(length), vocab_size, layout)
        for length in rng.integers(2, context_length + 1, 7)
    ]
    ids, mask = pad_ids(mixed, layout.pad)
    cases.append(
        Case(
            f"text batch 7 mixed lengths padded to {ids.shape[1]}", {"input_ids": ids, "attention_mask": mask}
        )
    )
    return cases


def row_cosines(reference: np.ndarray, got: np.ndarray) -> np.ndarray:
    reference, got = reference.astype(np.float64), got.astype(np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1)
    cosines: np.ndarray = (reference * got).sum(axis=1) / np.maximum(norms, 1e-12)
    return cosines


def compare(
    cases: Sequence[Case],
    reference: Callable[[Case], np.ndarray],
    candidate: Callable[[Case], np.ndarray],
    *,
    reference_name: str,
    threshold: float,
) -> Verification:
    min_cosine, max_abs = 1.0, 0.0
    for case in cases:
        want, got = reference(case), candidate(case)
        if want.shape != got.shape:
            raise VerificationFailed(f"{case.name}: output shape {got.shape}, expected {want.shape}")
        min_cosine = min(min_cosine, float(row_cosines(want, got).min()))
        max_abs = max(max_abs, float(np.abs(want.astype(np.float64) - got).max()))
    return Verification(
        reference=reference_name,
        min_cosine=min_cosine,
        max_abs_diff=max_abs,
        threshold=threshold,
        cases=[c.name for c in cases],
    )


def require(verification: Verification, what: str) -> None:
    """Raise with the figures when ``verification`` is below its threshold."""
    if not verification.min_cosine >= verification.threshold:  # also catches NaN
        raise VerificationFailed(
            f"{what}: min cosine {verification.min_cosine:.6f} vs {verification.reference} is below "
            f"{verification.threshold} (max abs diff {verification.max_abs_diff:.3g}; cases: "
            f"{', '.join(verification.cases)})"
        )


def cpu_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session: export checks run where the export runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def session_runner(session: ort.InferenceSession) -> Callable[[Case], np.ndarray]:
    names = {i.name for i in session.get_inputs()}

    def run(case: Case) -> np.ndarray:
        out: np.ndarray = session.run(None, {k: v for k, v in case.feeds.items() if k in names})[0]
        return out

    return run


def top_k_agreement(
    reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray], k: int = 10
) -> float:
    """Mean overlap of the top-k gallery items (columns) per query (rows) between two embedding spaces.

    Each argument is ``(queries, gallery)``; 1.0 means every query retrieves the same k items.
    """

    def top(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return np.argsort(-(queries @ gallery.T), axis=1)[:, :k]

    want, got = top(*reference), top(*candidate)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(want, got, strict=True)]))

"""Parallel text for teacher learning: the synthetic split is deterministic and true to the captions; the
reader indexes by byte offset and names a broken line."""

from __future__ import annotations

import json

import pytest

from service.preprocessing.text import ChineseTokenizer
from training.data.parallel import ParallelCollator, ParallelText, parallel_path
from training.data.records import DataError
from training.data.synthetic import write_synthetic_dataset


def test_the_synthetic_parallel_split_is_deterministic_and_pairs_captions_of_one_image(tmp_path):
    for name in ("a", "b"):
        write_synthetic_dataset(tmp_path / name, n_train=20, n_valid=4, n_test=4, seed=7, parallel=True)
    for split in ("train", "valid", "test"):
        a, b = (parallel_path(tmp_path / name, split).read_bytes() for name in ("a", "b"))
        assert a == b and a
    english = [json.loads(x)["text"] for x in (tmp_path / "a" / "en" / "train_texts.jsonl").open()]
    chinese = [json.loads(x)["text"] for x in (tmp_path / "a" / "train_texts.jsonl").open()]
    pairs = ParallelText(parallel_path(tmp_path / "a", "train"))
    assert len(pairs) == len(chinese) + len(english)  # every Chinese caption, plus English -> English
    rows = [pairs[i] for i in range(len(pairs))]
    assert {teacher for teacher, _ in rows} == set(english)
    assert {student for _, student in rows} == set(chinese) | set(english)
    # the first image: its English caption paired with its two Chinese captions, then with itself
    assert rows[:3] == [(english[0], chinese[0]), (english[0], chinese[1]), (english[0], english[0])]
    write_synthetic_dataset(tmp_path / "c", n_train=20, n_valid=4, n_test=4, seed=8, parallel=True)
    assert (
        parallel_path(tmp_path / "c", "train").read_bytes()
        != parallel_path(tmp_path / "a", "train").read_bytes()
    )


def test_a_broken_line_is_named_and_skipped_or_raised(tmp_path):
    path = tmp_path / "train_parallel.jsonl"
    path.write_text(
        '{"teacher": "a red circle", "student": "红色的圆形"}\n\n{"teacher": "x"}\n', encoding="utf-8"
    )
    strict = ParallelText(path)
    assert len(strict) == 2
    with pytest.raises(DataError, match=r"train_parallel\.jsonl:3"):
        strict[1]
    assert ParallelText(path, on_error="skip")[1] == ("a red circle", "红色的圆形")  # the next good line
    with pytest.raises(FileNotFoundError, match="--parallel"):
        ParallelText(tmp_path / "missing.jsonl")


def test_each_side_gets_its_own_tokenizer(tmp_path):
    teacher = ChineseTokenizer.from_vocab(context_length=16)
    student = ChineseTokenizer.from_vocab(context_length=8)
    teacher_ids, student_ids = ParallelCollator(teacher, student)([("a red circle", "红色的圆形")])
    assert teacher_ids.shape == (1, 16) and student_ids.shape == (1, 8)
    assert teacher_ids[0, 0] == 101
    assert (
        student_ids[0].tolist() == teacher.tokenize("红色的圆形")[0, :8].tolist()
    )  # [CLS] 5 chars [SEP] [PAD]

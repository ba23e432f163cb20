"""`tuwen ingest` against a real server: a Chinese-CLIP split over HTTP, resumable log, failure report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.service.api_server import image_bytes, serve, settings_for, tiny_bundle

pytestmark = pytest.mark.slow


def test_ingest_a_cn_clip_split_resumes_and_reports_failures(tmp_path: Path) -> None:
    bundle = tiny_bundle()
    data = tmp_path / "dataset"
    data.mkdir()
    rows = [
        f"{i}\t{base64.urlsafe_b64encode(image_bytes((i * 40, 80, 200 - i * 30))).decode()}" for i in range(5)
    ]
    rows.append("99\t" + base64.urlsafe_b64encode(b"not an image").decode())
    (data / "test_imgs.tsv").write_text("\n".join(rows) + "\n")
    texts = [{"text_id": 100 + i, "text": f"第{i}个颜色块", "image_ids": [i]} for i in range(5)]
    (data / "test_texts.jsonl").write_text("\n".join(json.dumps(t, ensure_ascii=False) for t in texts) + "\n")
    log, report = tmp_path / "ingest.log", tmp_path / "failures.jsonl"
    with serve(settings_for(bundle, tmp_path / "data")) as base:
        args = [
            "ingest",
            str(data),
            "--split",
            "test",
            "--url",
            base,
            "--log",
            str(log),
            "--report",
            str(report),
        ]
        assert main([*args, "--no-progress", "--concurrency", "4"]) == 1  # one bad image
        failures = [json.loads(line) for line in report.read_text().splitlines()]
        assert [(f["ids"], f["code"]) for f in failures] == [(["99"], "image_unreadable")]
        assert httpx.get(f"{base}/items/image/3").status_code == 200
        assert httpx.get(f"{base}/items/text/102").json()["metadata"] == {"image_ids": [2]}
        done = log.read_text().splitlines()
        assert len(done) == 6  # five images, one text batch
        assert main([*args, "--no-progress"]) == 1  # only the failed item is tried again
        assert log.read_text().splitlines() == done

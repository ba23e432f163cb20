"""The web page in headless Chromium (Debian's chromium): a text search shows a grid of results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.service.api_server import client, image_bytes, serve, settings_for, tiny_bundle

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "test"


def test_a_text_search_shows_thumbnails_with_scores(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (make test installs it with apt-get where it can)")
    from playwright.sync_api import sync_playwright

    bundle = tiny_bundle()
    colors = {
        "红色圆形": (220, 20, 20),
        "蓝色方块": (20, 20, 220),
        "绿色圆形": (20, 200, 20),
        "黄色方块": (230, 210, 0),
    }
    with serve(settings_for(bundle, tmp_path / "data")) as base:
        with client(base) as http:
            for i, (name, rgb) in enumerate(colors.items()):
                shape = "circle" if "圆" in name else "square"
                r = http.post(
                    "/items",
                    data={"id": f"img-{i}", "metadata": json.dumps({"name": name}, ensure_ascii=False)},
                    files={"image": ("x.png", image_bytes(rgb, size=96, shape=shape))},
                )
                assert r.status_code == 200, r.text
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(base + "/")
            page.fill("#query", "红色的圆形")
            page.click("#search-button")
            page.wait_for_selector("#results .card img[src^='blob:']", timeout=20_000)
            cards = page.locator("#results .card")
            assert cards.count() == len(colors)
            scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
            assert scores == sorted(scores, reverse=True)
            assert "结果" in page.inner_text("#status")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
            browser.close()

"""The web page in headless Chromium (Debian's chromium): a text search shows a grid of results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.cli import main
from tests.service.api_server import image_bytes, serve, settings_for, tiny_bundle

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
    # A photo library with sub-folders, loaded by `tuwen ingest`: ids are relative paths with '/'.
    library = tmp_path / "photos"
    for i, (name, rgb) in enumerate(colors.items()):
        shape = "circle" if "圆" in name else "square"
        path = library / f"album-{i % 2}" / "2024" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(rgb, size=96, shape=shape))
    with serve(settings_for(bundle, tmp_path / "data")) as base:
        ingest = ["ingest", str(library), "--url", base, "--no-progress", "--log", str(tmp_path / "log")]
        assert main([*ingest, "--report", str(tmp_path / "failures.jsonl")]) == 0
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
            # Every thumbnail loaded, though every id has slashes in it.
            page.wait_for_function(
                "n => document.querySelectorAll(\"#results .card img[src^='blob:']\").length === n",
                arg=len(colors),
                timeout=20_000,
            )
            shown = set(page.locator("#results .id").all_inner_texts())
            assert shown == {f"album-{i % 2}/2024/{name}.png" for i, name in enumerate(colors)}
            scores = [float(s) for s in page.locator("#results .score").all_inner_texts()]
            assert scores == sorted(scores, reverse=True)
            assert "结果" in page.inner_text("#status")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "web_page.png"), full_page=True)
            browser.close()

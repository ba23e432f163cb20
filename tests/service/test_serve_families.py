"""A real `tuwen serve` (uvicorn, ONNX Runtime, Milvus Lite) on an AltCLIP and on an ALIGN bundle.

Random weights retrieve noise, so each tiny model is first fitted for a few seconds to ten synthetic
scenes (distinct colour and shape; a Chinese and an English caption each; tests/family_bundles.py), saved
as a Hugging Face directory and exported with `tuwen export`. Then the app ingests the images and both
captions of every scene into one index and finds each caption's own text item (top-1) and its image
(within the top 3 for most captions: chance is 3 in 10). Both apps share one Milvus Lite file: their
collections are named after their models and never mix.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.family_bundles import (
    FAMILIES,
    captions,
    fit,
    png_bytes,
    render,
    save_hf_directory,
    scenes,
    tokenizer_for,
)
from tests.service.api_server import client, serve, settings_for

pytestmark = pytest.mark.slow

SCENES = 10
TOP_K = 3
# how the fit is done per family: ALIGN's image tower stays as initialised (backpropagating through its
# depthwise convolutions is slow on CPU); its random features still tell these images apart
FITS: dict[str, dict[str, Any]] = {
    "altclip": {"steps": 60, "lr": 3e-3},
    "align": {"steps": 100, "lr": 1e-3, "freeze_image": True, "scale": 50.0},
}


@pytest.fixture(scope="module")
def gallery() -> list[tuple[Any, bytes]]:
    return [(scene, png_bytes(render(scene, i))) for i, scene in enumerate(scenes(SCENES))]


@pytest.fixture(scope="module")
def bundles(gallery: list[tuple[Any, bytes]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from PIL import Image

    from service.cli import main
    from training.models import build_model

    out = {}
    pairs = [(scene, Image.open(io.BytesIO(data)).convert("RGB")) for scene, data in gallery]
    for family, options in FITS.items():
        root = tmp_path_factory.mktemp(family)
        torch.manual_seed(0)
        model = build_model(FAMILIES[family]).eval()
        directory = save_hf_directory(model, family, root / "hf")  # the tokenizer files, to fit with
        tokenizer = tokenizer_for(family, directory, model.config.context_length)
        losses = fit(model, family, tokenizer, pairs, **options)
        print(f"{family} fit: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        save_hf_directory(model, family, directory)  # the fitted weights
        assert main(["export", str(directory), "--out", str(root / "bundle")]) == 0
        out[family] = root / "bundle"
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")  # one Milvus Lite file for both apps


@pytest.fixture
def http_for(bundles: dict[str, Path], data_dir: Path) -> Iterator[Any]:
    servers: list[Any] = []

    def start(family: str) -> httpx.Client:
        context = serve(settings_for(bundles[family], data_dir))
        servers.append(context)
        return client(context.__enter__())

    yield start
    for context in reversed(servers):
        context.__exit__(None, None, None)


def _ingest(http: httpx.Client, gallery: list[tuple[Any, bytes]]) -> None:
    for i, (scene, data) in enumerate(gallery):
        r = http.post(
            "/items",
            data={"id": f"scene-{i}", "metadata": json.dumps({"color": scene.color})},
            files={"image": ("scene.png", data)},
        )
        assert r.status_code == 200, r.text
    items = [
        {"id": f"{lang}-{i}", "text": text, "metadata": {"lang": lang}}
        for i, (scene, _) in enumerate(gallery)
        for lang, text in zip(("zh", "en"), captions(scene), strict=True)
    ]
    r = http.post("/items", json={"items": items})
    assert r.status_code == 200, r.text


def _search(http: httpx.Client, text: str, target: str) -> list[str]:
    r = http.post("/search", json={"text": text, "target": target, "top_k": TOP_K})
    assert r.status_code == 200, r.text
    return [hit["id"] for hit in r.json()["results"]]


@pytest.mark.parametrize("family", ["altclip", "align"])
def test_served_family_finds_each_caption_and_its_image(
    family: str, http_for: Any, gallery: list[tuple[Any, bytes]]
) -> None:
    http = http_for(family)
    ready = http.get("/readyz").json()
    assert ready["ready"] and (ready["model"], ready["family"]) == (f"tiny-{family}", family)
    embedded = http.post("/embed", json={"texts": ["红色的圆形", "a red circle"]}).json()
    assert (embedded["model"], embedded["family"]) == (f"tiny-{family}", family)
    _ingest(http, gallery)

    found = {"zh": 0, "en": 0}
    for i, (scene, _) in enumerate(gallery):
        for lang, text in zip(("zh", "en"), captions(scene), strict=True):
            assert _search(http, text, "text")[0] == f"{lang}-{i}", text  # Chinese and English, one index
            found[lang] += f"scene-{i}" in _search(http, text, "image")
    print(f"{family}: text->image own image in top {TOP_K}: {found} of {SCENES} each")
    # chance is TOP_K / SCENES = 0.3: a fitted model must do far better, in both languages
    assert min(found.values()) >= 0.7 * SCENES, found


def test_two_families_keep_separate_collections_in_one_milvus_file(
    http_for: Any, gallery: list[tuple[Any, bytes]], data_dir: Path
) -> None:
    from pymilvus import MilvusClient

    from service.store.schema import collection_name

    altclip = http_for("altclip")
    _ingest(altclip, gallery)  # idempotent by id
    before = {i: _search(altclip, captions(s)[1], "image") for i, (s, _) in enumerate(gallery)}
    align = http_for("align")  # same ids, another model, same file
    _ingest(align, gallery)
    assert {i: _search(altclip, captions(s)[1], "image") for i, (s, _) in enumerate(gallery)} == before
    assert len(altclip.post("/embed", json={"texts": ["x"]}).json()["embeddings"][0]) == 16
    assert len(align.post("/embed", json={"texts": ["x"]}).json()["embeddings"][0]) == 64

    names = {collection_name(f"tiny-{f}", kind) for f in ("altclip", "align") for kind in ("image", "text")}
    milvus = MilvusClient(str(data_dir / "milvus.db"))
    try:
        assert names <= set(milvus.list_collections())
        for name in names:
            count = milvus.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
            assert count == (SCENES if name.endswith("_image") else 2 * SCENES), name
    finally:
        milvus.close()

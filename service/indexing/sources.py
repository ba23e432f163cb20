"""What to index: a source read into a *plan*, one ``Row`` per item, in a fixed order.

Kinds of source (``--format auto`` tells them apart by shape):

- ``folder``: every image under a directory (id = path relative to it, '/' included); other files are
  reported as ``not_an_image``. ``--captions FILE.jsonl`` adds texts ``{"id", "text", "metadata"?}``.
- ``cnclip``: a Chinese-CLIP split, ``DIR --split S``: ``S_imgs.tsv`` (``image_id<TAB>base64``) or the LMDB
  ``DIR/lmdb/S/imgs``, and ``S_texts.jsonl`` (``{"text_id", "text", "image_ids"}``) as text items.
- ``webdataset``: ``.tar`` shards (one file or a directory of them): ``KEY.jpg|png|...`` is an image with
  id KEY; ``KEY.json`` its metadata; ``KEY.txt`` (or a ``"caption"``/``"text"`` in the JSON) a caption
  indexed as the text item KEY, so a caption and its image share an id.
- ``manifest``: a ``.jsonl`` or ``.parquet`` of rows ``{"id", "image"?: path relative to the manifest,
  "text"? | "caption"?, "metadata"?}``: an image item and/or a text item with that id.

A plan holds locators, never pixels: the bytes are read by the Ray tasks (``read_bytes``). Problems found
while planning (a bad id, oversized metadata or text, a duplicate id, a non-image file) become rows that
carry their error, so they are counted, sharded and reported like any other failure.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from service.commands.errors import CommandError
from service.config import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
Format = Literal["auto", "folder", "cnclip", "webdataset", "manifest"]
FORMATS: tuple[Format, ...] = ("auto", "folder", "cnclip", "webdataset", "manifest")


@dataclass(frozen=True)
class Row:
    """One item to index. ``ref`` (JSON) says where its image bytes are; ``error`` ("code: message") is set
    when planning already refused it."""

    kind: str  # image | text
    id: str
    source: str  # where it came from, for the report (path, file:line, shard.tar#member)
    ref: str = ""
    metadata: str = "{}"
    text: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def plan(
    source: Path, fmt: Format, split: str | None, captions: Path | None, settings: Settings
) -> list[Row]:
    """Every item of ``source`` in a stable order, checked against the service's limits and id rules."""
    if not source.exists():
        raise CommandError(f"{source} does not exist")
    fmt = _detect(source, split) if fmt == "auto" else fmt
    if fmt == "cnclip" and not split:
        raise CommandError("a Chinese-CLIP source needs --split (e.g. --split valid)")
    readers = {
        "folder": lambda: _folder(source, captions),
        "cnclip": lambda: _cnclip(source, split or ""),
        "webdataset": lambda: _webdataset(source),
        "manifest": lambda: _manifest(source),
    }
    return _checked(readers[fmt](), settings)


def _detect(source: Path, split: str | None) -> Format:
    if source.is_file():
        if source.suffix == ".tar":
            return "webdataset"
        if source.suffix in (".jsonl", ".parquet"):
            return "manifest"
        raise CommandError(f"{source}: give a folder, a .tar shard, or a .jsonl/.parquet manifest")
    if split:
        return "cnclip"
    files = [p for p in source.iterdir() if not p.name.startswith(".")]
    if files and all(p.suffix == ".tar" for p in files):
        return "webdataset"
    return "folder"


def _checked(rows: Iterator[Row], settings: Settings) -> list[Row]:
    """Apply the rules POST /items applies, so an indexed item is one the service would have stored."""
    from service.api.errors import ApiError
    from service.api.schemas import Limits
    from service.store.schema import id_problem, metadata_problem

    limits = Limits(settings)
    seen: set[tuple[str, str]] = set()
    out: list[Row] = []
    for row in rows:
        error = row.error
        if not error and (problem := id_problem(row.id)):
            error = f"invalid_id: {problem}"
        if not error:
            metadata = json.loads(row.metadata)
            problem = metadata_problem(metadata)
            try:
                if problem:
                    raise ApiError(422, "invalid_metadata", problem)
                limits.metadata(metadata)
                if row.kind == "text":
                    limits.text(row.text)
            except ApiError as exc:
                error = f"{exc.code}: {exc.message}"
        key = (row.kind, row.id)
        if not error and key in seen:
            error = f"duplicate_id: another {row.kind} item of this source already has id {row.id!r}"
        seen.add(key)
        out.append(Row(**{**row.as_dict(), "error": error}))
    return out


def _image(item_id: str, source: str, ref: dict[str, Any], metadata: Any = None) -> Row:
    encoded, error = _metadata_json(metadata)
    return Row("image", item_id, source, json.dumps(ref), encoded, error=error)


def _text(item_id: str, text: Any, source: str, metadata: Any = None) -> Row:
    encoded, error = _metadata_json(metadata)
    if not isinstance(text, str):
        error = f"invalid_text: the text must be a string, not {type(text).__name__}"
    return Row(
        "text", item_id, source, metadata=encoded, text=text if isinstance(text, str) else "", error=error
    )


def _metadata_json(metadata: Any) -> tuple[str, str]:
    """(JSON, "") or ("{}", error): NaN and other values JSON cannot carry are refused here."""
    if metadata is not None and not isinstance(metadata, dict):
        return "{}", "invalid_metadata: metadata must be a JSON object"
    try:
        return json.dumps(metadata or {}, ensure_ascii=False, allow_nan=False), ""
    except (ValueError, TypeError) as exc:
        return "{}", f"invalid_metadata: {exc}"


def _folder(root: Path, captions: Path | None) -> Iterator[Row]:
    files = (p for p in root.rglob("*") if p.is_file())
    # hidden files and folders (.git, .DS_Store, editors' droppings) are not part of a photo collection
    for path in sorted(
        p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)
    ):
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() in IMAGE_SUFFIXES:
            yield _image(rel, str(path), {"file": str(path)})
        else:
            yield Row(
                "image",
                rel,
                str(path),
                error=f"not_an_image: {path.suffix or 'no suffix'} is not one of "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}; the file was skipped",
            )
    if captions:
        for where, record in _jsonl(captions):
            yield _text(str(record.get("id", "")), record.get("text"), where, record.get("metadata"))


def _cnclip(root: Path, split: str) -> Iterator[Row]:
    tsv, lmdb_dir, texts = (
        root / f"{split}_imgs.tsv",
        root / "lmdb" / split / "imgs",
        root / f"{split}_texts.jsonl",
    )
    if tsv.exists():
        offset = 0
        with open(tsv, "rb") as handle:
            for number, line in enumerate(handle, 1):
                image_id, sep, _ = line.partition(b"\t")
                if line.strip():
                    where = f"{tsv}:{number}"
                    if sep:
                        yield _image(
                            image_id.decode(errors="replace"), where, {"tsv": str(tsv), "offset": offset}
                        )
                    else:
                        yield Row(
                            "image", f"line-{number}", where, error="invalid_record: expected id<TAB>base64"
                        )
                offset += len(line)
    elif lmdb_dir.exists():
        import lmdb

        with lmdb.open(str(lmdb_dir), readonly=True, lock=False) as env, env.begin() as txn:
            keys = [bytes(k) for k in txn.cursor().iternext(keys=True, values=False)]
        for key in sorted(keys, key=lambda k: (len(k), k)):
            if key not in (b"num_images", b"num_samples"):
                yield _image(
                    key.decode(), f"{lmdb_dir}#{key.decode()}", {"lmdb": str(lmdb_dir), "key": key.decode()}
                )
    elif not texts.exists():
        raise CommandError(f"none of {tsv}, {lmdb_dir} or {texts} exists")
    if texts.exists():
        for where, record in _jsonl(texts):
            yield _text(
                str(record.get("text_id", "")),
                record.get("text"),
                where,
                {"image_ids": record.get("image_ids", [])},
            )


def _webdataset(source: Path) -> Iterator[Row]:
    shards = [source] if source.is_file() else sorted(source.glob("*.tar"))
    if not shards:
        raise CommandError(f"{source}: no .tar shards")
    for shard in shards:
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        with tarfile.open(shard) as tar:
            members = tar.getmembers()
            for member in members:
                if member.isfile():
                    # WebDataset: the key is the path up to the first dot of the file name
                    folder, _, name = member.name.rpartition("/")
                    stem, _, ext = name.partition(".")
                    key = f"{folder}/{stem}" if folder else stem
                    samples.setdefault(key, {})[ext.lower()] = member
            for key, parts in samples.items():
                where = f"{shard}#{key}"
                extra = _sample_json(tar, parts.get("json"), where)
                caption = extra.pop("caption", None) or extra.pop("text", None)
                if "txt" in parts:
                    caption = _member_bytes(tar, parts["txt"]).decode("utf-8", errors="replace").strip()
                image = next((parts[e] for e in parts if f".{e}" in IMAGE_SUFFIXES), None)
                if image is not None:
                    ref = {"tar": str(shard), "offset": image.offset_data, "size": image.size}
                    yield _image(key, f"{where}.{image.name.rpartition('.')[2]}", ref, extra)
                elif caption is None:
                    yield Row("image", key, where, error="not_an_image: the sample has no image file")
                if caption is not None:
                    yield _text(key, caption, where, {**extra, "image_id": key} if image else extra)


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    return handle.read() if handle else b""


def _sample_json(tar: tarfile.TarFile, member: tarfile.TarInfo | None, where: str) -> dict[str, Any]:
    if member is None:
        return {}
    try:
        value = json.loads(_member_bytes(tar, member))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"_unreadable_json": where}
    return value if isinstance(value, dict) else {"value": value}


def _manifest(path: Path) -> Iterator[Row]:
    records: Iterator[tuple[str, dict[str, Any]]]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        records = ((f"{path}#row{i}", r) for i, r in enumerate(table.to_pylist()))
    else:
        records = _jsonl(path)
    texts: list[Row] = []
    for where, record in records:
        item_id = str(record.get("id", ""))
        metadata = record.get("metadata")
        if isinstance(metadata, str):  # Parquet manifests often carry metadata as a JSON string
            try:
                metadata = json.loads(metadata)
            except json.JSONDecodeError:
                metadata = {"_unreadable_json": where}
        if record.get("image"):
            image = path.parent / str(record["image"])
            yield _image(item_id, str(image), {"file": str(image)}, metadata)
        caption = record.get("text") or record.get("caption")
        if caption is not None:
            texts.append(_text(item_id, caption, where, metadata))
    yield from texts


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CommandError(
                        f"{path}:{number}: not JSON ({exc.msg}); fix or remove the line"
                    ) from None
                yield f"{path}:{number}", record if isinstance(record, dict) else {}


def read_bytes(ref: str) -> bytes:
    """The image bytes a ``Row.ref`` points at (in a Ray task); OSError / ValueError when unreadable."""
    where = json.loads(ref)
    if "file" in where:
        return Path(where["file"]).read_bytes()
    if "tar" in where:
        with open(where["tar"], "rb") as handle:
            handle.seek(where["offset"])
            return handle.read(where["size"])
    if "tsv" in where:
        with open(where["tsv"], "rb") as handle:
            handle.seek(where["offset"])
            payload = handle.readline().partition(b"\t")[2].strip()
        return _b64(payload)
    if "lmdb" in where:
        with _lmdb(where["lmdb"]).begin() as txn:
            payload = txn.get(where["key"].encode())
        if payload is None:
            raise ValueError(f"key {where['key']!r} is gone from {where['lmdb']}")
        return _b64(bytes(payload))
    raise ValueError(f"unknown locator {ref}")


def _b64(payload: bytes) -> bytes:
    try:  # Chinese-CLIP writes urlsafe base64; tolerate the standard alphabet and missing padding
        return base64.urlsafe_b64decode(
            payload.replace(b"+", b"-").replace(b"/", b"_") + b"=" * (-len(payload) % 4)
        )
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the image is not valid base64 ({exc})") from None


@functools.cache
def _lmdb(path: str) -> Any:
    import lmdb

    return lmdb.open(path, readonly=True, lock=False, readahead=False)

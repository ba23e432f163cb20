"""`tuwen ingest`: load a folder of images, a JSONL file, or a Chinese-CLIP split into a running service.

Sources:
- a folder: every image under it (id = path relative to the folder); ``--captions FILE.jsonl`` adds
  texts ``{"id", "text", "metadata"?}``.
- ``FILE.jsonl``: one item a line, ``{"id", "image": path (relative to the file) | "text": ..., "metadata"}``.
- a Chinese-CLIP split: ``DIR --split valid`` reads ``valid_imgs.tsv`` (``image_id<TAB>base64``) and
  ``valid_texts.jsonl`` (``{"text_id", "text", "image_ids"}``).

Everything goes over HTTP (``POST /items``) with bounded concurrency. Each acknowledged item is appended
to a log (``--log``), so a second run skips what is done; failures are written to ``--report`` with the
server's error code and message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.commands.errors import CommandError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TEXT_BATCH = 32


@dataclass
class Job:
    kind: str  # image | text
    ids: list[str]
    image: bytes | Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    texts: list[dict[str, Any]] = field(default_factory=list)

    def image_bytes(self) -> bytes:
        return self.image.read_bytes() if isinstance(self.image, Path) else (self.image or b"")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("ingest", help="load images and captions into a running service over HTTP")
    p.add_argument("source", type=Path, help="image folder, items .jsonl, or a Chinese-CLIP dataset folder")
    p.add_argument("--split", help="Chinese-CLIP split name (reads SPLIT_imgs.tsv and SPLIT_texts.jsonl)")
    p.add_argument("--captions", type=Path, help="JSONL of texts for a folder source: {id, text, metadata}")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service (default %(default)s)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("TUWEN_INGEST_KEY") or None,
        help="API key, when the service requires one (default: $TUWEN_INGEST_KEY; the environment keeps it "
        "out of process listings)",
    )
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default %(default)s)")
    p.add_argument(
        "--log", type=Path, help="resumable log of acknowledged items (default: SOURCE.ingested.log)"
    )
    p.add_argument("--report", type=Path, help="JSONL of failures (default: SOURCE.failures.jsonl)")
    p.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for /readyz first")
    p.add_argument(
        "--retry-for",
        type=float,
        default=300,
        help="keep retrying an item the service answers 429/503 for (or cannot be reached) this many seconds "
        "(default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    source: Path = args.source
    if not source.exists():
        raise CommandError(f"{source} does not exist")
    log_path = args.log or source.with_name(source.name + ".ingested.log")
    report_path = args.report or source.with_name(source.name + ".failures.jsonl")
    done = _read_log(log_path)
    jobs = [job for job in _jobs(source, args.split, args.captions) if _key(job) not in done]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    failures = asyncio.run(
        _ingest(
            jobs,
            args.url,
            headers,
            args.concurrency,
            log_path,
            args.wait,
            not args.no_progress,
            args.retry_for,
        )
    )
    with open(report_path, "w", encoding="utf-8") as report:
        for failure in failures:
            report.write(json.dumps(failure, ensure_ascii=False) + "\n")
    sent = sum(len(j.ids) for j in jobs)
    failed = sum(len(f["ids"]) for f in failures)
    print(
        f"ingested {sent - failed} items ({len(done)} already done before), {failed} failed"
        + (f": see {report_path}" if failed else "")
    )
    return 1 if failed else 0


def _key(job: Job) -> str:
    return f"{job.kind}\t" + "\x1f".join(job.ids)


def _read_log(path: Path) -> set[str]:
    if not path.exists():
        return set()
    return {line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _jobs(source: Path, split: str | None, captions: Path | None) -> Iterator[Job]:
    if split:
        yield from _cn_clip(source, split)
    elif source.is_dir():
        for path in sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        ):
            yield Job("image", [path.relative_to(source).as_posix()], image=path)
        if captions:
            yield from _text_jobs(_read_jsonl(captions))
    elif source.suffix == ".jsonl":
        texts = []
        for row in _read_jsonl(source):
            if row.get("image"):
                yield Job(
                    "image",
                    [str(row["id"])],
                    image=source.parent / row["image"],
                    metadata=row.get("metadata") or {},
                )
            if row.get("text"):
                texts.append(row)
        yield from _text_jobs(texts)
    else:
        raise CommandError(
            f"{source}: give an image folder, a .jsonl file, or a Chinese-CLIP folder with --split"
        )


def _cn_clip(root: Path, split: str) -> Iterator[Job]:
    images, texts = root / f"{split}_imgs.tsv", root / f"{split}_texts.jsonl"
    if not images.exists() and not texts.exists():
        raise CommandError(f"neither {images} nor {texts} exists")
    if images.exists():
        with open(images, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    image_id, b64 = line.rstrip("\n").split("\t", 1)
                    yield Job(
                        "image", [image_id], image=base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
                    )
    if texts.exists():
        yield from _text_jobs(
            {"id": str(r["text_id"]), "text": r["text"], "metadata": {"image_ids": r.get("image_ids", [])}}
            for r in _read_jsonl(texts)
        )


def _text_jobs(rows: Any) -> Iterator[Job]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append({"id": str(row["id"]), "text": row["text"], "metadata": row.get("metadata") or {}})
        if len(batch) == TEXT_BATCH:
            yield Job("text", [r["id"] for r in batch], texts=batch)
            batch = []
    if batch:
        yield Job("text", [r["id"] for r in batch], texts=batch)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CommandError(f"{path}:{number}: not JSON ({exc.msg})") from None


async def _ingest(
    jobs: list[Job],
    url: str,
    headers: dict[str, str],
    concurrency: int,
    log_path: Path,
    wait_s: float,
    progress: bool,
    retry_for_s: float,
) -> list[dict[str, Any]]:
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    failures: list[dict[str, Any]] = []
    semaphore = asyncio.Semaphore(max(1, concurrency))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        await _wait_ready(client, wait_s)
        with (
            open(log_path, "a", encoding="utf-8") as log,
            Progress(
                TextColumn("ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                disable=not progress,
            ) as bar,
        ):
            task = bar.add_task("ingest", total=sum(len(j.ids) for j in jobs))

            async def one(job: Job) -> None:
                async with semaphore:
                    failure = await _send(client, job, retry_for_s)
                if failure is None:
                    log.write(_key(job) + "\n")
                    log.flush()
                else:
                    failures.append(failure)
                bar.advance(task, len(job.ids))

            await asyncio.gather(*(one(job) for job in jobs))
    return failures


async def _send(client: Any, job: Job, retry_for_s: float) -> dict[str, Any] | None:
    """POST one job; overload (429) and outages (503, connection errors) are retried, honouring
    Retry-After, until ``retry_for_s`` has passed: a Milvus restart mid-ingest loses nothing."""
    import httpx

    deadline = time.monotonic() + retry_for_s
    attempt = 0
    while True:
        wait = min(2**attempt * 0.5, 8.0)
        try:
            if job.kind == "image":
                response = await client.post(
                    "/items",
                    data={"id": job.ids[0], "metadata": json.dumps(job.metadata, ensure_ascii=False)},
                    files={"image": (job.ids[0].rsplit("/", 1)[-1], job.image_bytes())},
                )
            else:
                response = await client.post("/items", json={"items": job.texts})
        except (httpx.TransportError, OSError) as exc:
            error = {"code": "connection_error", "message": str(exc)}
        else:
            if response.status_code == 200:
                return None
            try:
                error = response.json()
            except ValueError:
                error = {"code": f"http_{response.status_code}", "message": response.text[:200]}
            if response.status_code not in (429, 503):  # only overload and outages are worth retrying
                return {"kind": job.kind, "ids": job.ids, "status": response.status_code, **error}
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                wait = max(wait, float(retry_after))
        if time.monotonic() + wait > deadline:
            return {"kind": job.kind, "ids": job.ids, "status": None, **error}
        await asyncio.sleep(wait)
        attempt += 1


async def _wait_ready(client: Any, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() >= deadline:
            if wait_s:
                raise CommandError(f"the service at {client.base_url} was not ready within {wait_s:.0f} s")
            return
        await asyncio.sleep(0.5)
